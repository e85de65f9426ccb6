"""The sweep's progress display: runs finished and episodes done over all runs."""

from __future__ import annotations

import sys
import time

SWEEP_LINES_EVERY_S = 60.0  # a plain progress line this often where stdout is not a terminal


def duration(seconds: float) -> str:
    """1h05m, 4m10s, 12s."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s % 60:02d}s" if m else f"{s}s")


class SweepProgress:
    """One progress display for the whole sweep: runs finished and episodes done over all runs. On
    a terminal a rich bar; elsewhere (a log file, nohup, CI) a plain line at the start, at every
    finished run, every :data:`SWEEP_LINES_EVERY_S` seconds and at the end, flushed at once;
    nothing when disabled (``--no-progress``)."""

    def __init__(self, enabled: bool, name: str, runs: int, skipped: int, total_eps: int, eps_done: int,
                 every_s: float = SWEEP_LINES_EVERY_S, stream=None):  # fmt: skip
        self.name, self.runs, self.finished, self.total_eps = name, runs, skipped, total_eps
        self.failed = self.diverged = 0
        self.eps0 = self.eps = eps_done
        self.every_s, self.stream = every_s, stream or sys.stdout
        self.t0 = self.last = time.perf_counter()
        self.mode = None if not enabled else ("bar" if self.stream.isatty() else "lines")
        self.prog = None
        if self.mode == "bar":
            from .._progress import progress_bar

            self.prog = progress_bar()
            self.t_runs = self.prog.add_task(f"{name}: runs", total=runs, completed=skipped)
            self.t_eps = self.prog.add_task("episodes", total=total_eps, completed=eps_done)

    def __enter__(self):
        if self.prog:
            self.prog.__enter__()
        elif self.mode == "lines":
            self._line("start")
        return self

    def __exit__(self, *exc):
        if self.prog:
            self.prog.__exit__(*exc)
        elif self.mode == "lines":
            self._line("stopped" if exc[0] else "end")

    def _notes(self) -> list[str]:
        return [f"{n} {what}" for n, what in ((self.failed, "failed"), (self.diverged, "diverged")) if n]

    def _line(self, what: str) -> None:
        self.last = time.perf_counter()
        rate = (self.eps - self.eps0) / max(self.last - self.t0, 1e-9)
        eta = duration((self.total_eps - self.eps) / rate) if rate > 0 else "-"
        notes = "".join(f", {x}" for x in self._notes())
        print(
            f"{self.name} [{what}]: runs {self.finished}/{self.runs} finished{notes}; episodes "
            f"{self.eps}/{self.total_eps} ({self.eps / max(self.total_eps, 1):.0%}), {rate:.2f}/s, "
            f"{duration(self.last - self.t0)} elapsed, ETA {eta}",
            file=self.stream,
            flush=True,
        )

    def run_finished(self, status: str, episodes_done: int | None = None, planned: int | None = None,
                     eps_now: int | None = None) -> None:  # fmt: skip
        """A run came back with ``status`` after ``episodes_done`` of its ``planned`` episodes; one
        that ended before its last (early stop, divergence, failure) takes its unrun episodes out of
        the total, so that the two counters agree when every run has finished. ``eps_now``: the
        episodes done over all runs now (the line shows it, not the last poll's)."""
        if status != "interrupted" and episodes_done is not None and planned is not None:
            self.total_eps -= max(0, planned - int(episodes_done))
        if eps_now is not None:
            self.eps = eps_now
        if self.prog:
            self.prog.update(self.t_eps, total=self.total_eps, completed=self.eps)
        self.failed += status == "failed"
        self.diverged += status == "diverged"
        self.finished += status in ("done", "diverged")
        if self.prog:
            self.prog.advance(self.t_runs)
            notes = ", ".join(self._notes())
            self.prog.update(self.t_runs, description=f"{self.name}: runs" + (f" ({notes})" if notes else ""))
        elif self.mode == "lines":
            self._line(f"a run {status}")

    def episodes(self, n: int) -> None:
        self.eps = n
        if self.prog:
            self.prog.update(self.t_eps, completed=n)
        elif self.mode == "lines" and time.perf_counter() - self.last >= self.every_s:
            self._line("progress")
