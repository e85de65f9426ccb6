"""The local backend: a pool of spawned worker processes on this machine."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..experiment.stop import StopToken
from .control import STOP_WAIT_S, run_one
from .jobs import Job


def pool_worker(tasks, results, stop: StopToken, threads: int) -> None:
    """A local pool worker process: runs jobs from ``tasks`` until a ``None``, its stop token is
    requested (the sweep stopped or is gone, or this worker got SIGINT / SIGTERM) or the queue is
    empty; reports ``("start", job id, pid)`` and ``("done", job id, result)`` on ``results``."""
    # Ctrl-C at a terminal reaches the whole process group: the sweep relays it through the shared
    # event, so a worker ignores SIGINT (inherited ignored from its start, see _PoolRun.start) and
    # stops on the event or on a SIGTERM of its own
    stop.signals = tuple(s for s in stop.signals if s != signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop.installed():
            while not stop.requested:
                try:
                    job = tasks.get(timeout=0.5)
                except queue.Empty:
                    continue
                if job is None:
                    break
                results.put(("start", job.id, os.getpid()))
                results.put(("done", job.id, run_one(job, threads, stop)))
    except KeyboardInterrupt:  # a second Ctrl-C while idle: leave
        pass


@dataclass
class LocalPool:
    """A pool of ``workers`` spawned processes on this machine. Each worker holds a child of the
    sweep's stop token (the sweep's ``multiprocessing`` event, and the sweep's pid: a worker whose
    sweep is gone stops too); a worker that dies mid-run is replaced and its run recorded as failed."""

    workers: int
    threads: int

    def describe(self, jobs: int) -> str:
        return (f"backend local: {min(self.workers, jobs)} worker process(es) at once on this machine, "
                f"{self.threads} torch thread(s) each")  # fmt: skip

    def run(self, jobs: list[Job], on_done: Callable, poll: Callable, stop: StopToken) -> None:
        _PoolRun(self, jobs, on_done, stop).run(poll)


class _PoolRun:
    """One call of :meth:`LocalPool.run`: the worker processes, the job queue (fed as workers take
    jobs: a full pipe never blocks a stop or an exit) and the results."""

    def __init__(self, pool: LocalPool, jobs: list[Job], on_done: Callable, stop: StopToken):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.pool, self.on_done, self.stop = pool, on_done, stop
        stop.share(self.ctx.Event())
        self.tasks, self.results = self.ctx.Queue(), self.ctx.Queue()
        self.n = min(pool.workers, len(jobs))
        self.waiting = list(jobs)
        self.left = {j.id for j in jobs}
        self.holding: dict[int, str] = {}  # worker pid -> the job it is on
        self.dead_since: dict[int, float] = {}
        self.feed(self.n)
        self.procs = [self.start() for _ in range(self.n)]

    def feed(self, k: int = 1) -> None:
        for _ in range(k):
            if self.stop.requested:
                return
            if self.waiting:
                self.tasks.put(self.waiting.pop(0))
                if not self.waiting:
                    for _ in range(self.n):
                        self.tasks.put(None)

    def start(self):
        p = self.ctx.Process(
            target=pool_worker, args=(self.tasks, self.results, self.stop.child(), self.pool.threads)
        )
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # inherited by the worker
        try:
            p.start()
        finally:
            if main:
                signal.signal(signal.SIGINT, old)
        return p

    def collect(self, timeout: float) -> None:
        try:
            kind, jid, payload = self.results.get(timeout=timeout)
        except queue.Empty:
            return
        if kind == "start":
            self.holding[payload] = jid
            self.feed()
        elif jid in self.left:
            self.left.discard(jid)
            for pid in [p for p, j in self.holding.items() if j == jid]:
                del self.holding[pid]
            self.on_done(jid, payload)

    def reap(self) -> None:
        """A worker killed mid-run (exit code not 0): once nothing more can come from it, its run
        failed; a new worker takes its place."""
        for p in list(self.procs):
            if p.exitcode in (None, 0) or p.pid not in self.holding:
                continue
            if time.time() - self.dead_since.setdefault(p.pid, time.time()) < 2.0:
                continue
            jid = self.holding.pop(p.pid)
            self.procs.remove(p)
            self.left.discard(jid)
            self.on_done(jid, {"status": "failed", "error": f"worker process died (exit code {p.exitcode})"})
            if self.left and not self.stop.requested:
                self.procs.append(self.start())

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.procs)

    def run(self, poll: Callable) -> None:
        try:
            while self.left:
                if self.stop.requested:
                    raise KeyboardInterrupt
                self.collect(1.0)
                self.reap()
                poll()
        except KeyboardInterrupt:  # queued runs never start; running ones checkpoint and stop
            self.stop.request()
            while self.alive() or not self.results.empty():
                self.collect(0.5)
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the workers to leave (at most :data:`STOP_WAIT_S`), then kill what is left."""
        if self.alive():  # normally every worker has left already
            self.stop.event.set()
        deadline = time.time() + STOP_WAIT_S
        while self.alive() and time.time() < deadline:
            try:  # a second Ctrl-C: still collect, so that no worker blocks on a full pipe
                self.collect(0.2)
            except KeyboardInterrupt:
                pass
        for p in self.procs:
            if p.is_alive():  # pragma: no cover - a stuck worker: never leave it behind
                p.kill()
            p.join()
        self.tasks.cancel_join_thread()  # what is left in the queue is never waited for
