"""Trainer callbacks (the Stable-Baselines3 / BenchMARL pattern): everything a run does besides
training — the gradient-flow monitor, TensorBoard, the progress display, checkpoints, early stop — is
a :class:`Callback` the trainer calls at fixed points:

    on_run_start(trainer, start)       after the run is built and resumed, before the first episode
    on_episode_start(trainer, ep)      before episode ``ep``
    on_episode_end(trainer, row) -> bool   after it (``row`` is its metrics row, already appended to
                                       ``trainer.rows``); False asks the trainer to stop after it
    on_checkpoint(trainer)             when a checkpoint is written (after metrics.parquet)
    on_run_end(trainer) -> dict        after the last episode; the dict goes into status.json
    close()                            always, last (also after an error or an interrupt)

A callback with a ``state_key`` has its ``state_dict()`` saved in the checkpoint under that key and
gets it back with ``load_state_dict(sd, episodes_done)`` on resume. Callbacks run in list order; each
sees what the earlier ones added to ``row``. :func:`default_callbacks` builds the list a config asks
for.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .runner import Trainer

from .hooks import Callback
from .loggers import logger_callbacks  # W&B / MLflow, when cfg.logging enables them

__all__ = ["Callback", "default_callbacks"]

PROGRESS_EVERY_S = 10.0  # plain progress lines when stdout is not a terminal


class MonitorCallback(Callback):
    """The gradient-flow monitor (``monitor/``): measures, adds its summary columns to the row and
    ``time_monitor_s`` (its own bookkeeping, outside ``time_episode_s``), writes its parts with every
    checkpoint and the stop events at the end; with ``monitor.early_stop`` it stops the run once
    every actor has stopped for ``early_stop_patience`` measurements."""

    state_key = "monitor"

    def __init__(self, learner, cfg, run_dir):
        from ..monitor.integration import MonitorSession

        self.monitor = MonitorSession.for_run(cfg, run_dir, learner)
        self._t_start = 0.0

    def on_episode_start(self, trainer: Trainer, episode: int) -> None:
        t0 = time.perf_counter()
        self.monitor.start_episode(episode)
        self._t_start = time.perf_counter() - t0

    def on_episode_end(self, trainer: Trainer, row: dict) -> bool:
        t0 = time.perf_counter()
        row.update(self.monitor.end_episode(int(row["episode"]), row, trainer.learner))
        row["time_monitor_s"] = self._t_start + time.perf_counter() - t0
        return not self.monitor.should_stop()

    def on_checkpoint(self, trainer: Trainer) -> None:
        self.monitor.flush()

    def on_run_end(self, trainer: Trainer) -> dict:
        return {"stops": self.monitor.finish()}

    def state_dict(self) -> dict:
        return self.monitor.state_dict()

    def load_state_dict(self, sd: dict, episodes_done: int) -> None:
        self.monitor.load_state_dict(sd, episodes_done)


class PackRunMonitor(MonitorCallback):
    """A run's monitor in a pack: the pack's one :class:`GradientFlowMonitor` measures every run's
    networks; the engine hands the run's rows (its slice) to this run's session (``take``), which
    writes its ``monitor/`` exactly as alone and keeps its own stop streak. ``initial``: the run's
    own first weights (its learner's when built, before a checkpoint is loaded), per role of the
    pack's monitor, so that its ``weight_difference`` counts from them as alone."""

    def __init__(self, cfg, run_dir, learner=None):
        from ..monitor.integration import MonitorSession

        self.monitor = MonitorSession.for_run(cfg, run_dir)
        self.initial: dict[str, list] = {}
        if learner is not None:
            self.initial = {
                role: [p.detach().clone() for p in getattr(learner, role).parameters()]
                for role in ("actors", "critic")
            }

    def on_episode_start(self, trainer: Trainer, episode: int) -> None:
        pass

    def on_episode_end(self, trainer: Trainer, row: dict) -> bool:
        return not self.monitor.should_stop()

    def take(self, episode: int, rows: list[dict] | None, row: dict) -> None:
        """The run's rows of the pack's measurement of ``episode`` (None: not measured)."""
        row.update(self.monitor.take_shared(episode, rows, row))


# metrics.parquet column -> TensorBoard tag
TB_TAGS = {
    "eval_return": "charts/eval_return",
    "train_return": "charts/train_return",
    "eval_constraint_frac": "charts/eval_constraint_frac",
    "eval_energy_penalty_frac": "charts/eval_energy_penalty_frac",
    "eval_time_penalty_frac": "charts/eval_time_penalty_frac",
    "epsilon": "charts/epsilon",
    "critic_loss": "losses/critic_loss",
    "actor_loss": "losses/actor_loss",
    "q_mean": "losses/q_mean",
    "time_episode_s": "perf/episode_seconds",
    "actors_changed": "monitor/actors_changed",
    "actor_grad_norm": "monitor/actor_grad_norm",
    "critic_grad_norm": "monitor/critic_grad_norm",
    "grad_ratio": "monitor/actor_critic_grad_ratio",
    "actor_sat_exact_frac": "monitor/actor_saturated_exact_frac",
}


class TensorBoardCallback(Callback):
    """TensorBoard events in ``tb/``: the finite values of :data:`TB_TAGS` per episode; the monitors
    given write their histograms to the same writer."""

    def __init__(self, log_dir, monitors=()):
        self.log_dir, self.monitors, self.writer = log_dir, list(monitors), None

    def on_run_start(self, trainer: Trainer, start: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir), purge_step=start if start else None)
        for m in self.monitors:
            m.tb_writer = self.writer

    def on_episode_end(self, trainer: Trainer, row: dict) -> bool:
        step = int(row["episode"])
        for k, tag in TB_TAGS.items():
            v = row.get(k)
            if v is not None and np.isfinite(v):
                self.writer.add_scalar(tag, float(v), step)
        return True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ProgressLines(Callback):
    """Where stdout is not a terminal (a log file, nohup, CI): a plain line every
    :data:`PROGRESS_EVERY_S` seconds and at the first and last episode, flushed at once."""

    def __init__(self, total: int, label: str, every_s: float = PROGRESS_EVERY_S):
        self.total, self.label, self.every_s = total, label, every_s

    def on_run_start(self, trainer: Trainer, start: int) -> None:
        self.start, self.t0, self.last = start, time.perf_counter(), -float("inf")

    def on_episode_end(self, trainer: Trainer, row: dict) -> bool:
        ep = int(row["episode"]) + 1
        now = time.perf_counter()
        if now - self.last < self.every_s and ep not in (self.start + 1, self.total):
            return True
        self.last = now
        r = row.get("eval_return", np.nan)
        rate = (now - self.t0) / (ep - self.start)
        print(
            f"{self.label}: episode {ep}/{self.total}, eval return {f'{r:.2f}' if np.isfinite(r) else '-'}, "
            f"{now - self.t0:.0f} s elapsed, ETA {rate * (self.total - ep):.0f} s",
            flush=True,
        )
        return True


class ProgressBar(Callback):
    """A progress bar with the latest evaluation return, on a terminal."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.prog = total, label, None

    def on_run_start(self, trainer: Trainer, start: int) -> None:
        from rich.progress import TextColumn

        from .._progress import progress_bar

        self.prog = progress_bar(TextColumn("eval {task.fields[ret]}"))
        self.prog.__enter__()
        self.task = self.prog.add_task(self.label, total=self.total, completed=start, ret="-")

    def on_episode_end(self, trainer: Trainer, row: dict) -> bool:
        r = row.get("eval_return", np.nan)
        self.prog.update(self.task, advance=1, ret=f"{r:9.2f}" if np.isfinite(r) else "-")
        return True

    def close(self) -> None:
        if self.prog is not None:
            self.prog.__exit__(None, None, None)
            self.prog = None


class Checkpointing(Callback):
    """A checkpoint every ``every`` episodes, at the last one, and whenever the run is stopping
    (an earlier callback asked to stop, or Ctrl-C / SIGTERM); put it after the callbacks that may
    ask to stop."""

    def __init__(self, every: int):
        self.every = every

    def on_episode_end(self, trainer: Trainer, row: dict) -> bool:
        done = trainer.episodes_done
        if done % self.every == 0 or done == trainer.total or trainer.stopping:
            trainer.checkpoint()
        return True


def default_callbacks(trainer: Trainer) -> list[Callback]:
    """The callbacks ``trainer.cfg`` asks for, in their order: monitor, TensorBoard, progress,
    loggers (W&B, MLflow), checkpoints."""
    cfg, cbs = trainer.cfg, []
    if cfg.monitor.enabled and trainer.learner.monitorable:
        cbs.append(MonitorCallback(trainer.learner, cfg, trainer.run_dir))
    if cfg.training.tensorboard:
        monitors = [cb.monitor for cb in cbs if isinstance(cb, MonitorCallback)]
        cbs.append(TensorBoardCallback(trainer.rd.tensorboard_dir, monitors))
    if trainer.progress and not trainer.quiet:
        bar = ProgressBar if sys.stdout.isatty() else ProgressLines
        cbs.append(bar(cfg.training.episodes, trainer.run_dir.name))
    cbs.extend(logger_callbacks(trainer))
    cbs.append(Checkpointing(cfg.training.checkpoint_every))
    return cbs


def pack_member_callbacks(trainer: Trainer) -> list[Callback]:
    """The defaults of a run in a pack, with the run's monitor writer (:class:`PackRunMonitor`) in
    place of a monitor of its own."""
    cbs = [cb for cb in default_callbacks(trainer) if not isinstance(cb, MonitorCallback)]
    if trainer.cfg.monitor.enabled:
        cbs.insert(0, PackRunMonitor(trainer.cfg, trainer.run_dir, trainer.learner))
    return cbs
