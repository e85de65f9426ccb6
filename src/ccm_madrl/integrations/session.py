"""Measurement units, rows and run-directory tables for a monitor driven by someone else's loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..monitor.core import GradientFlowMonitor
from ..monitor.integration import MonitorFiles
from ..rundir import RunDir


class MonitorSession:
    """A :class:`GradientFlowMonitor` plus the bookkeeping a training library's callback needs.

    ``begin()`` / ``end()`` bracket one measurement unit (a rollout and the gradient steps after
    it, or an episode): they are the monitor's ``start_episode`` / ``end_episode`` with a running
    unit index. ``end()`` keeps the rows of the roles that stepped, adds each role's current
    learning rate (read from its optimiser), the unit's mean |reward| of the training batches
    (``note_rewards``) and ``effective_lr`` = lr x |reward|, and writes them to
    ``RUN_DIR/monitor/agents/`` every ``flush_every`` rows. ``finish()`` writes ``summary.json``.
    The files are written by :class:`~ccm_madrl.monitor.integration.MonitorFiles`, the writer of a
    MEC run's monitor too.

    Plain PyTorch loop (CleanRL style)::

        s = MonitorSession(run_dir="runs/mine")
        s.attach("actor", actor, actor_opt); s.attach("critic", critic, critic_opt)
        for step in ...: s.begin(); ...update...; s.end(timesteps=step)
        s.finish()
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
    ):
        self.mon = monitor or GradientFlowMonitor(interval, stop_threshold)
        self.dir = RunDir(run_dir).monitor_dir if run_dir is not None else None
        self.files = MonitorFiles(self.dir) if self.dir is not None else None
        self.early_stop = early_stop
        self.early_stop_patience = int(early_stop_patience)
        self.flush_every = int(flush_every)
        self.unit = 0
        self.open = False
        self.rows: list[dict] = []
        self._optimizers: dict[str, Any] = {}
        self._reward_sum = 0.0
        self._reward_n = 0

    def attach(self, role: str, module: torch.nn.Module, optimizer: Any = None, **kw) -> MonitorSession:
        """``GradientFlowMonitor.attach`` (keyword arguments passed on)."""
        self.mon.attach(role, module, optimizer=optimizer, **kw)
        self._optimizers[role] = optimizer
        return self

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
        reward_abs = self._reward_sum / self._reward_n if self._reward_n else float("nan")
        for r in rows:
            opt = self._optimizers.get(r["role"])
            if opt is not None and getattr(opt, "param_groups", None):
                r["lr"] = float(opt.param_groups[0]["lr"])
            r["reward_abs"] = reward_abs
            r["effective_lr"] = r.get("lr", float("nan")) * reward_abs
            r.update(extra)
        self.rows.extend(rows)
        if self.files is not None:
            self.files.add(rows)
            if len(self.files.pending) >= self.flush_every:
                self.flush()
        return rows

    def should_stop(self) -> bool:
        """Every actor has been below the stop threshold for ``early_stop_patience`` measured units."""
        return bool(self.early_stop and self.mon.all_actors_stopped_streak >= self.early_stop_patience)

    def flush(self) -> None:
        if self.files is not None:
            self.files.flush()

    def finish(self, **extra) -> dict | None:
        """End the open unit, write the remaining rows and the stop events; detach the monitor."""
        self.end(**extra)
        self.mon.detach()
        if self.files is None:
            return None
        return self.files.finish(self.mon.stop_threshold, compact=False)
