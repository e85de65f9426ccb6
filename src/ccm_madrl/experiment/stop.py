"""One stop token shared by a sweep and its runs: "finish the current episode, checkpoint, stop".

A :class:`StopToken` is asked to stop in three ways, all read through ``token.requested``:

- a signal to this process while the token is ``installed()`` (SIGINT / SIGTERM; a second SIGINT
  aborts at once with KeyboardInterrupt);
- ``token.request()`` here, or on the token it was made from (:meth:`StopToken.child`): the two share
  an *event*, anything with ``set()`` and ``is_set()`` (a ``multiprocessing`` event for the local
  pool's workers);
- the process that made the child token is gone (the sweep was killed with SIGKILL).

The trainer reads ``token.requested`` after every episode (``Trainer(stop=token)``), so a run stopped
by its own Ctrl-C, by its sweep or by its sweep's death checkpoints and ends ``interrupted`` the same
way. A signal only flags its own process: one worker's SIGTERM stops that worker's run, not the
sweep; ``request()`` flags every holder of the event. Where no event can be shared, the sweep reaches
its runs' tokens through signals: ``ray.cancel`` interrupts a Ray task as a SIGINT would, ``scancel``
sends SIGTERM to a SLURM job and SLURM sends SIGUSR2 before a time limit.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Protocol


class Event(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...


class StopToken:
    """Whether the holder should stop after its current step (see the module doc)."""

    def __init__(
        self,
        event: Event | None = None,
        parent_pid: int | None = None,
        poll_s: float = 0.0,
        signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
    ):
        self.signals = signals  # those that flag the token while installed (SLURM jobs add SIGUSR2)
        self.event = event
        self.parent_pid = parent_pid
        self.poll_s = poll_s  # read the event at most this often (for an event whose read is a round trip)
        self._flag = False
        self._signals = 0
        self._last_poll = 0.0
        self._depth = 0
        self._old: dict = {}

    def share(self, event: Event, poll_s: float = 0.0) -> StopToken:
        """Give this token an event that its children (:meth:`child`) share; returns self."""
        self.event, self.poll_s = event, poll_s
        if self._flag:
            event.set()
        return self

    def child(self, watch_parent: bool = True) -> StopToken:
        """A token for a process this one starts: the same event and, with ``watch_parent``, it
        stops once this process is gone (for direct child processes, not for Ray tasks)."""
        return StopToken(self.event, os.getpid() if watch_parent else None, self.poll_s, self.signals)

    def request(self) -> None:
        """Stop this token and every token sharing its event."""
        self._flag = True
        if self.event is not None:
            self.event.set()

    @property
    def requested(self) -> bool:
        if self._flag:
            return True
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self._flag = True  # the process that started us is gone
        elif self.event is not None:
            now = time.monotonic()
            if now - self._last_poll >= self.poll_s:
                self._last_poll = now
                self._flag = bool(self.event.is_set())
        return self._flag

    # ------------------------------------------------------------------ signals
    def _handler(self, signum, frame) -> None:
        self._signals += 1
        if self._flag and signum == signal.SIGINT and self._signals > 1:
            raise KeyboardInterrupt
        self._flag = True

    @contextmanager
    def installed(self):
        """Its signals (SIGINT and SIGTERM by default) flag this token while inside (re-entrant; a
        no-op outside the main thread, where Python cannot install signal handlers)."""
        if self._depth == 0 and threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handler)
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                for s, h in self._old.items():
                    signal.signal(s, h)
                self._old = {}

    def reinstall(self) -> None:
        """Put this token's handlers back while it is ``installed()`` (after a library replaced
        one: ``ray.init`` installs a SIGTERM handler that exits the process)."""
        if self._depth and threading.current_thread() is threading.main_thread():
            for s in self.signals:
                signal.signal(s, self._handler)

    @contextmanager
    def interrupting(self, every_s: float = 0.5):
        """For code that cannot poll the token (another library's training loop): once the token is
        requested, raise KeyboardInterrupt in the main thread (SIGINT to this process)."""
        done = threading.Event()
        main = threading.main_thread().ident

        def watch() -> None:
            while not done.wait(every_s):
                if self.requested:  # repeated: an installed handler takes the first as its flag
                    # to the main thread itself: raise_signal() here would send it to this thread,
                    # and a main thread blocked in a C call (a sleep, a native loop) would only see it
                    # when that call returns
                    if hasattr(signal, "pthread_kill"):
                        signal.pthread_kill(main, signal.SIGINT)
                    else:  # no per-thread signals (Windows)
                        signal.raise_signal(signal.SIGINT)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            yield self
        finally:
            done.set()
            t.join()
