"""The monitor inside a training run: attach to the learner, write Parquet parts and TensorBoard
histograms, warn, stop early.

:class:`MonitorFiles` is the one writer of a run's monitor files, for every way a monitor runs: a
run alone (:class:`RunMonitor`), a run in a pack (the same :class:`RunMonitor`, fed the run's rows
of the pack's monitor: :meth:`RunMonitor.take_shared`) and another library's loop
(``integrations/session.MonitorSession``: SB3, BenchMARL, cross-domain runs, a plain PyTorch loop).

Files in ``RUN_DIR/monitor/``:
- ``agents/part-<first>-<last>.parquet``: one row per (measured training episode, role, agent); the
  columns are documented in ``docs/monitor.md`` (long format: roles and agents are rows);
- ``summary.json``: stop events of the finished run (see :mod:`ccm_madrl.monitor.stops`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

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


class RunMonitor:
    def __init__(self, learner, cfg, run_dir: str | Path):
        from rich.console import Console

        mc = cfg.monitor
        self.cfg = cfg
        console = Console(stderr=True)
        self.mon = GradientFlowMonitor(
            mc.interval,
            mc.stop_threshold,
            warn=(lambda m: console.print(f"[yellow]monitor:[/yellow] {m}")) if mc.warn else None,
            rank_interval=mc.rank_interval,
        )
        learner.attach_monitor(self.mon)
        self.dir = RunDir(run_dir).monitor_dir
        (self.dir / "agents").mkdir(parents=True, exist_ok=True)
        self.files = MonitorFiles(self.dir)
        self.tb_writer = None
        self.actor_lr = cfg.agent.actor_lr
        self.critic_lr = cfg.agent.critic_lr

    @property
    def pending(self) -> list[dict]:
        """The measured rows not yet written (this episode's among them)."""
        return self.files.pending

    def start_episode(self, episode: int) -> None:
        self.mon.start_episode(episode)

    def end_episode(self, episode: int, row: dict, learner) -> dict:
        return self.take(episode, self.mon.end_episode(episode), row)

    def take(self, episode: int, rows: list[dict] | None, row: dict) -> dict:
        """Keep an episode's measured rows (None: not measured) and return its summary columns."""
        if rows is None or not row.get("trained"):
            return {}
        reward_abs = float(row.get("batch_reward_abs", np.nan))
        for r in rows:
            r["reward_abs"] = reward_abs
            r["effective_lr"] = r.get("lr", np.nan) * reward_abs
        self.files.add(rows)
        summary = summarize(rows)
        summary["effective_actor_lr"] = self.actor_lr * reward_abs
        summary["effective_critic_lr"] = self.critic_lr * reward_abs
        w = self.tb_writer
        if w is not None and self.cfg.monitor.histograms and episode % self.cfg.monitor.histogram_every == 0:
            for role in self.mon.roles.values():
                if role.last_z is not None:
                    w.add_histogram(
                        f"monitor/{role.name}_preactivation",
                        role.last_z.float().cpu().numpy().ravel(),
                        episode,
                    )
                gn = [
                    r["grad_norm"]
                    for r in rows
                    if r["role"] == role.name and r.get("grad_norm") == r.get("grad_norm")
                ]
                if gn:
                    w.add_histogram(f"monitor/{role.name}_grad_norm", np.asarray(gn), episode)
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

    def should_stop(self) -> bool:
        mc = self.cfg.monitor
        return bool(mc.early_stop and self.mon.all_actors_stopped_streak >= mc.early_stop_patience)

    def flush(self) -> None:
        self.files.flush()

    def finish(self) -> dict:
        """Write the last part and the summary, then compact the parts (``monitor.compact``)."""
        return self.files.finish(self.cfg.monitor.stop_threshold)

    def state_dict(self) -> dict:
        return self.mon.state_dict()

    def load_state_dict(self, sd: dict, episodes_done: int) -> None:
        """Resume: drop measurements of episodes after the checkpoint (they will be recomputed)."""
        self.mon.load_state_dict(sd)
        self.files.drop_from(episodes_done)


def monitor_for(learner, cfg, run_dir: str | Path) -> RunMonitor:
    return RunMonitor(learner, cfg, run_dir)
