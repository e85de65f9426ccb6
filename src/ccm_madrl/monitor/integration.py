"""The monitor inside a training run: attach to the learner, write Parquet parts and TensorBoard
histograms, warn, stop early.

:class:`MonitorSession` is the one session of a run's monitor, for every loop that drives one: a
run alone, a run in a pack (fed the run's rows of the pack's monitor: :meth:`MonitorSession.take_shared`)
and another library's loop (SB3, BenchMARL, cross-domain runs, a plain PyTorch loop);
:class:`MonitorFiles` is the one writer of its files.

Files in ``RUN_DIR/monitor/``:
- ``agents/part-<first>-<last>.parquet``: one row per (measured training episode, role, agent); the
  columns are documented in ``docs/monitor.md`` (long format: roles and agents are rows);
- ``summary.json``: stop events of the finished run (see :mod:`ccm_madrl.monitor.stops`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..rundir import RunDir, write_json, write_parquet
from .compact import SUMMARY, compact_monitor, read_agents  # noqa: F401 - re-exported
from .core import GradientFlowMonitor, summarize
from .stops import run_stops

PART = re.compile(r"part-(\d+)-(\d+)\.parquet$")


def write_part(monitor_dir: str | Path, rows: list[dict]) -> None:
    """Write measured rows as one Parquet part, named by their first and last episode (atomic)."""
    if not rows:
        return
    df = pd.DataFrame(rows)
    first, last = int(df["episode"].min()), int(df["episode"].max())
    path = Path(monitor_dir) / "agents" / f"part-{first:07d}-{last:07d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(path, df, Path(monitor_dir).parent)  # nothing written leads out of the run directory


def write_summary(monitor_dir: str | Path, stop_threshold: float) -> dict:
    """The run's stop events from every part, written to ``summary.json``."""
    stops = run_stops(read_agents(monitor_dir), stop_threshold)
    write_json(Path(monitor_dir) / SUMMARY, stops, Path(monitor_dir).parent)
    return stops


class MonitorFiles:
    """A run's ``monitor/`` directory: measured rows kept (``pending``) until ``flush`` writes them
    as one part; ``finish`` writes the stop events (``summary.json``) and, with ``compact``, joins
    the parts into one file per table; ``drop_from`` removes what a resumed run will measure again."""

    def __init__(self, monitor_dir: str | Path):
        self.dir = Path(monitor_dir)
        self.pending: list[dict] = []

    def add(self, rows: list[dict]) -> None:
        self.pending.extend(rows)

    def flush(self) -> None:
        if self.pending:
            write_part(self.dir, self.pending)
        self.pending = []

    def finish(self, stop_threshold: float, compact: bool = True) -> dict:
        """Write the last part and the summary (then compact the parts); returns the stop events."""
        self.flush()
        self.dir.mkdir(parents=True, exist_ok=True)
        stops = write_summary(self.dir, stop_threshold)
        if compact:
            compact_monitor(self.dir, stop_threshold)
        return stops

    def drop_from(self, episodes_done: int) -> None:
        """Resume: drop the measurements of episodes from ``episodes_done`` on (recomputed)."""
        for p in sorted((self.dir / "agents").glob("part-*.parquet")):
            m = PART.search(p.name)
            if not m or int(m.group(2)) < episodes_done:
                continue
            kept = pd.read_parquet(p)
            kept = kept[kept["episode"] < episodes_done]
            p.unlink()
            if len(kept):
                self.pending = kept.to_dict("records")
                self.flush()


class MonitorSession:
    """One run's monitor session, for every loop that drives a :class:`GradientFlowMonitor`: a MEC
    run alone (:meth:`for_run` with its learner), a run in a pack (:meth:`for_run` without one: the
    pack's monitor measures every run's networks and the engine hands this run its rows,
    :meth:`take_shared`), and another library's loop (SB3, BenchMARL, cross-domain runs, a plain
    PyTorch loop). Its files are written by :class:`MonitorFiles`.

    Another library's loop brackets each measurement unit (a rollout and the gradient steps after
    it, or an episode) with ``begin()`` / ``end()``: the monitor's ``start_episode`` /
    ``end_episode`` with a running unit index. ``end()`` keeps the rows of the roles that stepped,
    adds each role's current learning rate (read from its optimiser), the unit's mean |reward| of
    the training batches (``note_rewards``) and ``effective_lr`` = lr x |reward|, and writes them to
    ``RUN_DIR/monitor/agents/`` every ``flush_every`` rows. ``finish()`` writes ``summary.json``.

    Plain PyTorch loop (CleanRL style)::

        s = MonitorSession(run_dir="runs/mine")
        s.attach("actor", actor, actor_opt); s.attach("critic", critic, critic_opt)
        for step in ...: s.begin(); ...update...; s.end(timesteps=step)
        s.finish()

    A MEC run's engine calls ``start_episode`` / ``end_episode(episode, row)`` (or ``take_shared``
    in a pack), ``flush`` with each checkpoint, ``state_dict`` / ``load_state_dict`` to resume.
    """

    def __init__(
        self,
        run_dir: str | Path | None = None,
        interval: int = 1,
        stop_threshold: float = 1e-8,
        early_stop: bool = False,
        early_stop_patience: int = 20,
        flush_every: int = 5000,
        monitor: GradientFlowMonitor | None = None,
        warn: Callable[[str], None] | None = None,
        rank_interval: int | None = None,
    ):
        self.mon = monitor or GradientFlowMonitor(
            interval, stop_threshold, warn=warn, rank_interval=rank_interval
        )
        self.dir = RunDir(run_dir).monitor_dir if run_dir is not None else None
        self.files = MonitorFiles(self.dir) if self.dir is not None else None
        self.early_stop = early_stop
        self.early_stop_patience = int(early_stop_patience)
        self.flush_every = int(flush_every)  # 0: only flush() writes
        self.compact = False  # finish() joins the parts into one file per table
        self.detach_at_finish = True  # finish() removes the monitor's hooks (a MEC run's stay: its
        # learner's BatchedOptimizer hands back no removable handle)
        self.keep_rows = True  # keep every row in ``rows`` too
        self.histogram_every = 0  # TensorBoard histograms every k-th episode (0: none; ``tb_writer``)
        self.tb_writer = None
        self.lrs: dict[str, float] = {}  # summary column -> learning rate (x |reward|: ``effective_*``)
        self.unit = 0
        self.open = False
        self.rows: list[dict] = []
        self._optimizers: dict[str, Any] = {}
        self._reward_sum = 0.0
        self._reward_n = 0
        self._finished = False

    @classmethod
    def for_run(cls, cfg, run_dir: str | Path, learner=None) -> MonitorSession:
        """A MEC run's session from its config's ``monitor`` section; ``learner`` attaches its
        networks (``attach_monitor``); without one (a run in a pack) the rows come from outside."""
        mc = cfg.monitor
        warn = None
        if mc.warn:
            from rich.console import Console

            console = Console(stderr=True)
            warn = lambda m: console.print(f"[yellow]monitor:[/yellow] {m}")  # noqa: E731
        s = cls(run_dir, mc.interval, mc.stop_threshold, mc.early_stop, mc.early_stop_patience, 0, None, warn,
                mc.rank_interval)  # fmt: skip
        s.compact, s.keep_rows, s.detach_at_finish = True, False, False
        s.histogram_every = mc.histogram_every if mc.histograms else 0
        s.lrs = {"effective_actor_lr": cfg.agent.actor_lr, "effective_critic_lr": cfg.agent.critic_lr}
        if learner is not None:
            learner.attach_monitor(s.mon)
        (s.dir / "agents").mkdir(parents=True, exist_ok=True)
        return s

    @property
    def pending(self) -> list[dict]:
        """The measured rows not yet written (this episode's among them)."""
        return self.files.pending if self.files is not None else []

    def attach(self, role: str, module: torch.nn.Module, optimizer: Any = None, **kw) -> MonitorSession:
        """``GradientFlowMonitor.attach`` (keyword arguments passed on)."""
        self.mon.attach(role, module, optimizer=optimizer, **kw)
        self._optimizers[role] = optimizer
        return self

    # ------------------------------------------------------------------ rows
    def keep(self, rows: list[dict], reward_abs: float, **extra) -> list[dict]:
        """Complete measured rows (``reward_abs``, ``effective_lr`` = lr x |reward|, ``extra``) and
        keep them for the files; the one place rows of every loop pass through."""
        for r in rows:
            r["reward_abs"] = reward_abs
            r["effective_lr"] = r.get("lr", np.nan) * reward_abs
            r.update(extra)
        if self.keep_rows:
            self.rows.extend(rows)
        if self.files is not None:
            self.files.add(rows)
            if self.flush_every and len(self.files.pending) >= self.flush_every:
                self.flush()
        return rows

    # ------------------------------------------------------------------ another library's units
    def note_rewards(self, rewards: torch.Tensor | np.ndarray) -> None:
        """Rewards of a training batch (for ``reward_abs`` and ``effective_lr``)."""
        if self.open:
            r = torch.as_tensor(rewards).detach()
            self._reward_sum += float(r.abs().double().sum())
            self._reward_n += r.numel()

    def begin(self) -> bool:
        """Start a unit (no-op if one is open); returns whether it is measured."""
        if self.open:
            return self.mon.sampled(self.unit)
        self.open = True
        self._reward_sum, self._reward_n = 0.0, 0
        return self.mon.start_episode(self.unit)

    def end(self, **extra) -> list[dict]:
        """End the open unit; returns its rows (roles that took no optimiser step are left out)."""
        if not self.open:
            return []
        self.open = False
        rows = self.mon.end_episode(self.unit) or []
        self.unit += 1
        rows = [r for r in rows if r["steps"] > 0]
        for r in rows:
            opt = self._optimizers.get(r["role"])
            if opt is not None and getattr(opt, "param_groups", None):
                r["lr"] = float(opt.param_groups[0]["lr"])
        reward_abs = self._reward_sum / self._reward_n if self._reward_n else float("nan")
        return self.keep(rows, reward_abs, **extra)

    # ------------------------------------------------------------------ a MEC run's episodes
    def start_episode(self, episode: int) -> None:
        self.mon.start_episode(episode)

    def end_episode(self, episode: int, row: dict, learner=None) -> dict:
        """The episode's summary columns of the metrics row (its rows kept; {}: not measured)."""
        return self.take(episode, self.mon.end_episode(episode), row)

    def take(self, episode: int, rows: list[dict] | None, row: dict) -> dict:
        """Keep an episode's measured rows (None: not measured) and return its summary columns."""
        if rows is None or not row.get("trained"):
            return {}
        reward_abs = float(row.get("batch_reward_abs", np.nan))
        self.keep(rows, reward_abs)
        summary = summarize(rows)
        summary.update({key: lr * reward_abs for key, lr in self.lrs.items()})
        if self.tb_writer is not None and self.histogram_every and episode % self.histogram_every == 0:
            self._histograms(episode, rows)
        return summary

    def take_shared(self, episode: int, rows: list[dict] | None, row: dict) -> dict:
        """:meth:`take` for rows measured by another monitor (a pack's, over every run's networks):
        this run's stop streak follows its own actors' rows, as its own monitor's would."""
        if rows is not None and row.get("trained"):
            actors = [r for r in rows if r["is_actor"]]
            if actors and all(r["steps"] > 0 for r in actors):
                stopped = all(r["max_abs_change"] < self.mon.stop_threshold for r in actors)
                streak = self.mon.all_actors_stopped_streak
                self.mon.all_actors_stopped_streak = streak + 1 if stopped else 0
        return self.take(episode, rows, row)

    def _histograms(self, episode: int, rows: list[dict]) -> None:
        w = self.tb_writer
        for role in self.mon.roles.values():
            if role.last_z is not None:
                w.add_histogram(
                    f"monitor/{role.name}_preactivation", role.last_z.float().cpu().numpy().ravel(), episode
                )
            gn = [
                r["grad_norm"]
                for r in rows
                if r["role"] == role.name and r.get("grad_norm") == r.get("grad_norm")
            ]
            if gn:
                w.add_histogram(f"monitor/{role.name}_grad_norm", np.asarray(gn), episode)

    # ------------------------------------------------------------------ stop, files, state
    def should_stop(self) -> bool:
        """Every actor has been below the stop threshold for ``early_stop_patience`` measured units."""
        return bool(self.early_stop and self.mon.all_actors_stopped_streak >= self.early_stop_patience)

    def flush(self) -> None:
        if self.files is not None:
            self.files.flush()

    def finish(self, **extra) -> dict | None:
        """End the open unit, write the remaining rows and the stop events (then, with ``compact``,
        join the parts); detach the monitor (``detach_at_finish``). Returns the stop events (None: no run directory); a
        second call returns the first's."""
        if self._finished:
            return self.stops
        self.end(**extra)
        if self.detach_at_finish:
            self.mon.detach()
        self._finished = True
        self.stops = None if self.files is None else self.files.finish(self.mon.stop_threshold, self.compact)
        return self.stops

    def state_dict(self) -> dict:
        return self.mon.state_dict()

    def load_state_dict(self, sd: dict, episodes_done: int) -> None:
        """Resume: drop measurements of episodes after the checkpoint (they will be recomputed)."""
        self.mon.load_state_dict(sd)
        if self.files is not None:
            self.files.drop_from(episodes_done)


def monitor_for(learner, cfg, run_dir: str | Path) -> MonitorSession:
    """A MEC run's session watching ``learner`` (:meth:`MonitorSession.for_run`)."""
    return MonitorSession.for_run(cfg, run_dir, learner)
