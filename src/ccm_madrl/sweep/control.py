"""Process control: training one job where a backend runs it (:func:`run_one`, the one code path of
a local worker, a Ray task and a SLURM job), waiting for a run another process still holds, and
collecting results and stopping (interruption: every run checkpoints; re-running resumes)."""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable

from ..experiment.stop import StopToken
from ..rundir import STALE_AFTER_S, RunDir
from .jobs import Job, PackJob, RunJob

STOP_WAIT_S = 60.0  # after a stop, how long the local pool waits for its workers before killing them


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset`` or a container's
    cpuset), else the machine's count. Sizes the pool and each worker's torch threads outside a run,
    so that runs never ask for more threads than there are cores (oversubscribed torch threads slow a
    run down many times over); a training run itself uses its config's ``threads`` (default 1)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _train(job: RunJob, stop: StopToken) -> dict:
    """Train one run; its config is validated here as in the parent (``build_config``: every part,
    learner or logger named 'module:attribute' is imported in this process)."""
    from ..experiment.config import build_config
    from ..experiment.runner import train

    s = train(build_config(job.config), job.run_dir, progress=False, quiet=True, stop=stop)
    res = {"status": s.state, "episodes_done": s.episodes_done, "final_return": s.final_return}
    if s.state == "diverged":
        res["error"] = RunDir(job.run_dir).status().get("error")
    return res


def run_one(job: Job, threads: int, stop: StopToken | None = None) -> dict:
    """Train one job (in a worker process, a Ray task or a SLURM job); never raises: failures come
    back as data. ``stop`` is the sweep's stop token (default: this process's own signals); a run it
    stops checkpoints and comes back ``interrupted``; one it stops before the start, or one that
    another live process has started since the sweep's plan, comes back ``queued`` (not started).
    A pack job's result holds one result per member run under ``pack``."""
    import torch

    from ..experiment.runner import RunDirBusy

    stop = stop or StopToken()
    t0 = time.time()
    where = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": t0}
    if stop.requested:  # the sweep is gone or stopping: do not start another run
        return {"status": "queued", "wall_time_s": 0.0}
    try:
        if threads > 0:
            torch.set_num_threads(threads)
        wait_released(list(job.run_dirs), stop)
        if isinstance(job, PackJob):  # several runs as one program (experiment/pack.py)
            from ..experiment.pack import run_pack_job

            return {
                **run_pack_job([m.config for m in job.members], list(job.run_dirs), t0, stop=stop),
                **where,
            }
        res = _train(job, stop)
    except KeyboardInterrupt:  # stopped (its token, a signal): the run checkpointed and can resume
        res = {"status": "interrupted"}
        if isinstance(job, RunJob):  # a single run: where it stopped (a pack's members: their status)
            res["episodes_done"] = RunDir(job.run_dir).status().get("episodes_done")
    except RunDirBusy as err:  # another process started it since the plan: not run here, not failed
        res = {"status": "queued", "busy": str(err)}
    except BaseException as err:  # noqa: BLE001 - isolate every failure of a run, even SystemExit
        res = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
    return {**res, **where, "wall_time_s": time.time() - t0}


def wait_released(run_dirs: list[str], stop: StopToken, timeout_s: float = STALE_AFTER_S + 5.0) -> None:
    """Wait until no other live process trains these runs, at most ``timeout_s`` (a claim ends
    by then: its process exits, or its heartbeat goes stale). The plan skipped the runs that were
    busy then, so this waits only in a race: a Ray task retried while its first worker, on a lost
    node, is still exiting, or a second sweep that started one of these runs since; what is still
    busy afterwards is left to its process (``RunDirBusy``, result ``queued``)."""
    deadline = time.monotonic() + timeout_s
    while any(RunDir(d).trained_elsewhere() for d in run_dirs):
        if stop.requested or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def collect_ready(handles: dict, wait_some: Callable, result: Callable, on_done: Callable, what: str) -> None:
    """Collect the results that are ready: ``wait_some(handles) -> done handles`` (waits about a
    second at most); a handle whose result raises (its worker, task or job died) is recorded as a
    failed run."""
    for h in wait_some(list(handles)):
        try:
            res = result(h)
        except Exception as err:  # noqa: BLE001
            res = {"status": "failed", "error": f"{what} died: {err}", "traceback": traceback.format_exc()}
        on_done(handles.pop(h), res)


def drain(handles: dict, wait_some, result, on_done, poll, stop: StopToken, what: str) -> None:
    """Collect every result (see :func:`collect_ready`), calling ``poll()`` in between; raises
    KeyboardInterrupt once ``stop`` is requested."""
    while handles:
        if stop.requested:
            raise KeyboardInterrupt
        collect_ready(handles, wait_some, result, on_done, what)
        poll()


def collect_after_stop(handles: dict, wait_some, result, on_done, timeout_s: float) -> None:
    """After a stop: wait (up to ``timeout_s``) for the stopped runs to come back; a result is
    recorded, a cancelled one is not (the sweep then records its run's state from its status)."""
    deadline = time.time() + timeout_s
    while handles and time.time() < deadline:
        for h in wait_some(list(handles)):
            rid = handles.pop(h)
            try:
                res = result(h)
            except Exception:  # noqa: BLE001 - cancelled before it could return
                continue
            on_done(rid, res)
