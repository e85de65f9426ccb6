"""The stop token shared by sweeps and runs (``experiment/stop.py``)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from ccm_madrl.experiment.stop import StopToken


def test_request_reaches_every_holder_of_the_event_but_a_signal_only_its_own():
    root = StopToken().share(mp.get_context("spawn").Event())
    a, b = root.child(watch_parent=False), root.child(watch_parent=False)  # tokens of this process
    with a.installed():
        os.kill(os.getpid(), signal.SIGTERM)  # a signal flags the token installed here only
        assert a.requested and not b.requested and not root.requested
    root.request()
    assert b.requested and root.child(watch_parent=False).requested


def test_a_child_stops_once_its_parent_is_gone():
    orphan = StopToken(parent_pid=os.getppid() + 10_000_000)  # no such parent: it is gone
    assert orphan.requested
    assert not StopToken(parent_pid=os.getppid()).requested


def test_second_sigint_aborts_at_once():
    token = StopToken()
    with token.installed():
        os.kill(os.getpid(), signal.SIGINT)
        assert token.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)


def test_interrupting_stops_code_that_cannot_poll():
    """A main thread blocked in a C call (here a 5 s sleep) is interrupted within the watcher's period:
    the signal goes to the main thread (before, it went to the watcher's thread and the main thread
    saw it only when the sleep returned, 5 s later; under load even after the block had ended)."""
    token = StopToken()
    # the process's SIGINT state as a fresh interpreter has it (default handler, not blocked in this
    # thread), whatever code ran in this process before: the test is about the watcher's delivery
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    try:
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt), token.interrupting(every_s=0.05):
            token.request()
            time.sleep(5.0)  # another library's loop: interrupted long before this ends
        assert time.perf_counter() - t0 < 2.0
    finally:
        signal.signal(signal.SIGINT, old)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
