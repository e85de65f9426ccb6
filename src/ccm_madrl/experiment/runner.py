"""One training run: config -> (env <-> learner, observed by the monitor) -> run directory.

The episode loop (:mod:`ccm_madrl.experiment.engine`, the one loop of a run alone and of a pack)
reproduces the published schedule: evaluation on the fixed evaluation episodes
before every training episode from episode ``episodes_before_train`` on, one training episode with
exploration, the new transitions inserted into the replay with their priorities, then one training
step once ``episodes_before_train + 1`` episodes are done. ``training.eval_every = k > 1``
evaluates before every k-th of those episodes and the last one; the others record missing values
(NaN). In reference RNG mode that also changes the training episodes: an evaluation re-seeds the
shared legacy stream (evaluation episode i re-seeds it with i, and training continues from the last
evaluation episode's stream state, ``RunRNG.after_evaluation``), so a training episode after a
skipped evaluation draws its tasks, noise and exploration coins from where the previous training
episode left the stream instead; the run is no longer the published trajectory (independent mode:
evaluation uses its own streams, so only the evaluation columns change).

The run directory's format (file names, atomic writes, status states, the final return) is
:mod:`ccm_madrl.rundir`'s (see ``docs/run_store.md``).

A run whose training diverges (a non-finite critic loss, priority or action: ``FloatingPointError``)
ends in the state ``diverged``: a result, not a failure. Its metrics and monitor data up to its last
whole episode are written, and its stop events computed from them; a sweep does not run it again
(``rundir.FINISHED_STATES``).

Everything a run does besides training (the monitor, TensorBoard, the progress display, checkpoints,
early stop) is a callback (:mod:`ccm_madrl.experiment.callbacks`); ``Trainer(callbacks=...)`` takes
another list. Checkpoints are written every ``training.checkpoint_every`` episodes, on Ctrl-C / SIGTERM (after the
current episode finishes; a second Ctrl-C aborts at once) and at the end; the last two are kept.
Re-running the same command resumes from the newest checkpoint that loads (a damaged one is reported,
set aside as ``*.damaged`` and the one before it used); episodes after it are recomputed
bit-identically (every random stream's state is checkpointed and the run's torch threads are fixed by
its config), so the finished run is the same as an uninterrupted one. Checkpoints are loaded with
``torch.load(weights_only=True)``: tensors, NumPy arrays and plain values only, never arbitrary
pickled objects.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..agents import make_learner
from ..mec.dynamics import draw_devices
from ..mec.env import MECEnv, record_episodes
from ..mec.rng import RunRNG
from ..provenance import collect, resolve_device
from ..rundir import (  # noqa: F401 - effective_state: re-exported
    DirBusy,
    RunDir,
    check_inside,
    dir_lock,
    discard,
    effective_state,
    final_return,
    write_staged,
)
from .callbacks import Callback, default_callbacks
from .config import ExperimentConfig, load_yaml
from .engine import (  # noqa: F401 - EVAL_FIELDS, check_actions, diverged_error, training_row: re-exported
    EVAL_FIELDS,
    Engine,
    SoloEngine,
    check_actions,
    diverged_error,
    training_row,
)
from .memory import check_memory
from .stop import StopToken
from .summary import RunDirConflict, RunSummary

# What a checkpoint may hold besides tensors and plain Python values: NumPy arrays and dtypes (replay
# tree, optimiser step counts, the legacy RandomState's key). Nothing else is unpickled.
_np_core = getattr(np, "_core", None) or np.core
SAFE_GLOBALS = [np.ndarray, np.dtype, _np_core.multiarray._reconstruct]
SAFE_GLOBALS += [type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4", "u4", "u8", "bool")]


class CheckpointError(ValueError):
    """No checkpoint of the run directory can be loaded."""


class RunDirBusy(DirBusy):
    """Another live process trains this run directory now (a second launch of the same run or
    sweep): starting too would interleave two writers of one checkpoint and status."""


BUSY_HINT = (
    "; wait for it to finish or stop it (Ctrl-C / SIGTERM checkpoints it), then run again to resume"
)


def run_lock(run_dir: str | Path):
    """The run directory's lock (:func:`rundir.dir_lock`), held for the whole run; a second
    process is refused at once (:class:`RunDirBusy` naming the holder's pid and host)."""
    return dir_lock(run_dir, "run directory", RunDirBusy, BUSY_HINT)


def check_not_busy(rd: RunDir) -> None:
    """Refuse (:class:`RunDirBusy`, nothing written) when another live process trains ``rd``."""
    who = rd.trained_elsewhere()
    if who:
        raise RunDirBusy(
            f"run directory {rd.path}: another process is training this run ({who}); wait for it to "
            "finish or stop it (Ctrl-C / SIGTERM checkpoints it), then run again to resume"
        )


def finished_summary(rd: RunDir, config_id: str) -> RunSummary | None:
    """The summary of the experiment ``config_id`` when ``rd`` holds it finished (done, or
    diverged: running it again would diverge again); None otherwise."""
    finished = rd.finished_state(config_id)
    if finished == "done":
        df = rd.metrics()
        return RunSummary(rd.path, "done", len(df), final_return(df), 0.0)
    if finished == "diverged":
        return RunSummary(rd.path, "diverged", rd.status()["episodes_done"], np.nan, 0.0)
    return None


class Trainer:
    """Runs (or resumes) one experiment into ``run_dir``."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path,
        progress: bool = True,
        quiet: bool = False,
        callbacks: Callable[[Trainer], list[Callback]] = default_callbacks,
        stop: StopToken | None = None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.rd = RunDir(self.run_dir)
        self.live = self.rd.live_status()  # status.json with its heartbeat
        self.progress = progress
        self.quiet = quiet
        self.make_callbacks = callbacks
        self.callbacks: list[Callback] = []
        self.total = cfg.training.episodes
        self.rows: list[dict] = []
        self.episodes_done = 0
        self.stop = stop or StopToken()  # Ctrl-C / SIGTERM, or the sweep's stop (experiment/stop.py)
        self.early_stop = False  # a callback asked to stop
        self.device: torch.device | None = None
        self.engine: Engine | None = None  # the engine training this run (set by its attach)
        self.index = 0  # this run's place in the engine's batch
        self._closed = False

    @property
    def stopping(self) -> bool:
        """Whether the run stops after the current episode (a callback asked, or a signal came)."""
        return self.early_stop or self.stop.requested

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        cfg = self.cfg
        self.rng = RunRNG(cfg.rng_mode, cfg.seed, cfg.env_seed)
        if cfg.rng_mode == "reference":
            # published: the training env and the evaluation env are both constructed from the
            # global stream seeded with env_seed (identical devices) ...
            self.env = MECEnv(cfg.env, 1, "reference", cfg.env_seed, stream=self.rng.tasks)
            self.rng.tasks.seed(cfg.env_seed)
            draw_devices(cfg.env, self.rng.tasks)
        else:
            self.env = MECEnv(cfg.env, 1, "independent", cfg.env_seed, task_stream=self.rng.tasks)
        self.learner = make_learner(cfg, self.rng, self.device)
        self.rd.write_learner(self.learner.describe())
        self.env.reset()  # ... and the agent's constructor resets the training env once
        e = cfg.training.eval_episodes
        self.eval_table = record_episodes(cfg.env, cfg.rng_mode, cfg.env_seed, range(e)) if e else None
        self.eval_env = (
            MECEnv(cfg.env, e, cfg.rng_mode, cfg.env_seed, devices=self.env.devices) if e else None
        )
        SoloEngine().attach([self])  # alone until a pack's engine attaches it
        self.callbacks = self.make_callbacks(self)

    def prepare(self) -> int:
        """Build the run (streams, environments, learner, callbacks) and resume it from its newest
        checkpoint; returns the episode it starts from."""
        self._build()
        start, self.rows = self._resume()
        self.episodes_done = self.start = start
        return start

    # ------------------------------------------------------------------ evaluation and one episode
    def evaluate(self) -> dict:
        """Greedy policy on the fixed evaluation episodes, all as one batch of environments (the
        engine's evaluation of this run)."""
        return self.engine.evaluate()[self.index]

    def evaluates(self, ep: int) -> bool:
        """Whether episode ``ep`` starts with an evaluation: from episode ``episodes_before_train``
        on, every ``training.eval_every``-th episode (published: every one), and always the last."""
        ebt, k = self.cfg.agent.replay.episodes_before_train, self.cfg.training.eval_every
        return ep >= ebt and ((ep - ebt) % k == 0 or ep == self.total - 1)

    def episode(self, ep: int) -> dict:
        """This run's row of episode ``ep`` (run alone: the engine's episode of this one run)."""
        return self.engine.episode(ep)[self.index]

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> None:
        """Write the new checkpoint completely, then keep it and the one before it (two in all)."""
        episode_done = self.episodes_done
        self.engine.batch.write_back(self.index)  # a pack's slice of this run into its learner
        state = {
            "config_id": self.cfg.id(),
            "episodes_done": episode_done,
            "learner": self.learner.state_dict(),
            "rng": self.rng.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        state.update({cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_key})
        ck, prev = self.rd.checkpoint, check_inside(self.rd.prev_checkpoint, self.rd.path)
        new = write_staged(ck, lambda f: torch.save(state, f), self.rd.path)  # whole and synced
        try:
            self.rd.write_metrics(pd.DataFrame(self.rows))
            for cb in self.callbacks:
                cb.on_checkpoint(self)
            if ck.exists():
                os.replace(ck, prev)
            os.replace(new, ck)
        finally:
            discard(new)  # only when it was not renamed
        self._status("running", episode_done)

    def _load_checkpoint(self) -> dict | None:
        """The newest checkpoint that loads safely. A damaged or refused one is set aside
        (``*.damaged``); when an earlier one loads, one line on stderr names the bad file. None when
        the run has no checkpoint; :class:`CheckpointError` when it had some but none is usable."""
        found = [ck for ck in (self.rd.checkpoint, self.rd.prev_checkpoint) if ck.exists()]
        problems = []
        for ck in found:
            try:
                with torch.serialization.safe_globals(SAFE_GLOBALS):
                    state = torch.load(ck, map_location=self.device, weights_only=True)
            except pickle.UnpicklingError:
                why = "refused (it holds pickled objects other than tensors, arrays and plain values)"
            except Exception as err:  # noqa: BLE001 - truncated / corrupt archive: any reader error
                why = f"damaged ({type(err).__name__}: {' '.join(str(err).split())[:120]})"
            else:
                for bad in problems:
                    print(f"checkpoint {bad}; resuming from {ck}", file=sys.stderr, flush=True)
                return state
            os.replace(
                check_inside(ck, self.rd.path), check_inside(ck.with_name(ck.name + ".damaged"), self.rd.path)
            )
            problems.append(f"{ck} is {why}, kept as {ck.name}.damaged")
        if problems:
            raise CheckpointError(
                f"no usable checkpoint left in {self.run_dir}: {'; '.join(problems)}; to restart the run "
                f"from episode 0 delete {self.run_dir} (or use another --run-dir)"
            )
        return None

    def _resume(self) -> tuple[int, list[dict]]:
        state = self._load_checkpoint()
        if state is None:
            return 0, []
        if state["config_id"] != self.cfg.id():
            raise RunDirConflict(
                f"{self.run_dir} holds a checkpoint of a different experiment "
                f"(config id {state['config_id']} != {self.cfg.id()}); use another run directory"
            )
        self.learner.load_state_dict(state["learner"])
        self.rng.load_state_dict(state["rng"])
        torch.set_rng_state(state["torch_rng"].cpu())  # map_location may have moved it
        done = int(state["episodes_done"])
        rows = []
        if self.rd.metrics_path.exists():
            df = self.rd.metrics()
            rows = df[df["episode"] < done].to_dict("records")
        for cb in self.callbacks:
            if cb.state_key and state.get(cb.state_key) is not None:
                cb.load_state_dict(state[cb.state_key], done)
        return done, rows

    def _check_run_dir(self) -> None:
        cfg_path = self.rd.config_path
        if cfg_path.exists() and cfg_path.stat().st_size == 0 and not self.rd.checkpoint.exists():
            return  # an empty config.yaml without a checkpoint: a start that failed (a full disk), redone
        if cfg_path.exists():
            from .config import stored_config

            old = stored_config(load_yaml(cfg_path), str(cfg_path))  # the stored config: nothing imported
            if old.id() != self.cfg.id():
                raise RunDirConflict(
                    f"{self.run_dir} holds a different experiment (config id {old.id()} != {self.cfg.id()}); "
                    "use another run directory"
                )

    def _status(self, state: str, episodes_done: int, **extra) -> None:
        self.live.set(
            state,
            episodes_done=episodes_done,
            episodes=self.cfg.training.episodes,
            config_id=self.cfg.id(),
            **extra,
        )

    def _write_provenance(self, start: int) -> None:
        """provenance.json: how the run was made; every segment (the first run and each resume)
        appends its own entry to ``segments`` (threads, host, commit, version, time, ...); the
        top-level fields are those of the first segment."""
        prov = collect(self.device)
        prov.update(
            threads=self.cfg.threads,
            rng_mode=self.cfg.rng_mode,
            actor_update=self.cfg.agent.variant.actor_update,
            seed=self.cfg.seed,
            env_seed=self.cfg.env_seed,
            config_id=self.cfg.id(),
            resumed_from_episode=start,
        )
        seg = {k: prov[k] for k in SEGMENT_KEYS}
        old = self.rd.provenance() if start else {}
        if old:
            old.setdefault("segments", [{k: old.get(k) for k in SEGMENT_KEYS}])
            old["segments"].append(seg)
            prov = old
        else:
            prov["segments"] = [seg]
        self.rd.write_provenance(prov)

    # ------------------------------------------------------------------ main
    def run(self) -> RunSummary:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"run directory {self.run_dir}: exists and is not a directory")
        self.device = resolve_device(self.cfg.device)  # before anything is written
        check_memory(self.cfg)
        self.rd.check_safe()  # a received run directory: no link for a write to follow
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(self.run_dir):  # one process per run directory, for the life of the run
            self._check_run_dir()
            finished = finished_summary(self.rd, self.cfg.id())
            if finished is not None:
                return finished
            check_not_busy(self.rd)
            self.rd.write_config(self.cfg.to_yaml())
            threads_before = torch.get_num_threads()
            torch.set_num_threads(self.cfg.threads)
            try:
                return self._run()
            finally:
                torch.set_num_threads(threads_before)

    def _run(self) -> RunSummary:
        try:
            start = self.prepare()
        except Exception:
            self._status("failed", 0, error=traceback.format_exc())
            raise
        self._write_provenance(start)
        if not self.quiet:
            print(
                f"run directory: {self.run_dir}" + (f" (resuming after episode {start})" if start else ""),
                flush=True,
            )
        with self.stop.installed():
            self.engine.train(start)
        return self.engine.summaries[self.run_dir]

    def end_diverged(self, error: str, end: dict, t_start: float) -> RunSummary:
        """The metrics of the episodes before the divergence (whatever the last checkpoint), then
        status ``diverged`` with ``error`` and the stop events of the callbacks' ``end``
        (``on_run_end``)."""
        self.rd.write_metrics(pd.DataFrame(self.rows))
        ep = self.episodes_done
        self._status("diverged", ep, error=error, stops=end.get("stops"))
        return RunSummary(self.run_dir, "diverged", ep, np.nan, time.perf_counter() - t_start)

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def close_callbacks(self) -> None:
        """Every callback's ``close`` (once)."""
        if not self._closed:
            self._closed = True
            for cb in self.callbacks:
                cb.close()


SEGMENT_KEYS = (
    "time_utc",
    "resumed_from_episode",
    "hostname",
    "ray_node",
    "version",
    "commit",
    "dirty",
    "torch",
    "threads",
    "torch_threads",
    "device",
    "device_name",
    "platform",
    "argv",
)


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    progress: bool = True,
    quiet: bool = False,
    stop: StopToken | None = None,
) -> RunSummary:
    """Run (or resume) one experiment; ``stop`` (default: this process's Ctrl-C / SIGTERM) ends it
    after the current episode with a checkpoint, status 'interrupted' and KeyboardInterrupt."""
    stop = stop or StopToken()
    if cfg.kind == "cross":  # another library's agent (experiment/cross.py): it cannot poll the token
        from .cross import train_cross

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir), stop.installed(), stop.interrupting():
            return train_cross(cfg, run_dir, progress=progress, quiet=quiet)
    return Trainer(cfg, run_dir, progress=progress, quiet=quiet, stop=stop).run()
