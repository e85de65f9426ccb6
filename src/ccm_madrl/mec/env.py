"""The batched MEC environment: E independent environments x N agents, stepped as arrays.

Observation per agent: ``[power, gain, energy, size, cycle, ddl, res]`` (shape (E, N, 7)).
Action per agent (the master's hybrid action): ``[x, alpha, rho]`` with x in {0 local, 1 offload,
2 offload with punishment} and alpha, rho in [0.01, 1] (shape (E, N, 3)).
Reward: the shared sum over agents (shape (E,)).

Random draws come from a *task source*: live streams (one per environment, or one shared stream
drawing for all) or a recorded table (used to replay the fixed evaluation episodes at no cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import MECConfig
from .dynamics import Devices, StepOutcome, draw_devices, draw_harvest, draw_tasks, step_dynamics
from .rng import Stream, check_rng_mode, construction_stream, eval_stream

STATE_FIELDS = ("power", "gain", "energy", "size", "cycle", "ddl", "res")
ACTION_FIELDS = ("x", "alpha", "rho")


@dataclass
class EpisodeTable:
    """Recorded random draws of E episodes: tasks (E, T+1, N, 3) and harvest (E, T, N)."""

    tasks: np.ndarray
    harvest: np.ndarray
    final_stream_state: Any = None  # state of the last episode's stream after the episode


class StreamTasks:
    """Draws tasks live, from one stream per environment or from one stream shared by all."""

    def __init__(self, streams: Sequence[Stream] | Stream, n_envs: int):
        if isinstance(streams, (np.random.RandomState, np.random.Generator)):
            self.shared: Stream | None = streams
            self.streams: list[Stream] = [streams]
        else:
            self.shared = None
            self.streams = list(streams)
            if len(self.streams) != n_envs:
                raise ValueError(f"streams: need one per environment ({n_envs}), got {len(self.streams)}")
        self.n_envs = n_envs

    def reset(self, cfg: MECConfig) -> np.ndarray:
        return self._tasks(cfg)

    def step(self, cfg: MECConfig) -> tuple[np.ndarray, np.ndarray]:
        if self.shared is not None:
            harvest = draw_harvest(cfg, self.shared, self.n_envs)
            return harvest, draw_tasks(cfg, self.shared, self.n_envs)
        harvest = np.empty((self.n_envs, cfg.n_agents))
        tasks = np.empty((self.n_envs, cfg.n_agents, 3))
        for e, s in enumerate(self.streams):  # per-env order: harvest then new tasks
            harvest[e] = draw_harvest(cfg, s)
            tasks[e] = draw_tasks(cfg, s)
        return harvest, tasks

    def _tasks(self, cfg: MECConfig) -> np.ndarray:
        if self.shared is not None:
            return draw_tasks(cfg, self.shared, self.n_envs)
        return np.stack([draw_tasks(cfg, s) for s in self.streams])


class TableTasks:
    """Replays an :class:`EpisodeTable`; ``reset`` rewinds to its first step."""

    def __init__(self, table: EpisodeTable):
        self.table = table
        self.t = 0

    def reset(self, cfg: MECConfig) -> np.ndarray:
        self.t = 0
        return self.table.tasks[:, 0]

    def step(self, cfg: MECConfig) -> tuple[np.ndarray, np.ndarray]:
        if self.t >= self.table.harvest.shape[1]:
            raise RuntimeError("the recorded episode table is exhausted; reset the environment")
        self.t += 1
        return self.table.harvest[:, self.t - 1], self.table.tasks[:, self.t]


def record_episodes(cfg: MECConfig, rng_mode: str, env_seed: int, seeds: Sequence[int]) -> EpisodeTable:
    """Record the draws of the episodes reset with ``seeds`` (one environment per seed).

    The draws do not depend on the actions, so an evaluation episode is fully determined by its
    seed: recording once and replaying gives exactly what re-seeding and re-drawing would.
    """
    streams = [eval_stream(rng_mode, env_seed, int(k)) for k in seeds]
    src = StreamTasks(streams, len(streams))
    tasks = [src.reset(cfg)]
    harvest = []
    for _ in range(cfg.max_steps):
        h, t = src.step(cfg)
        harvest.append(h)
        tasks.append(t)
    last = streams[-1] if streams else None
    final_state = last.get_state() if isinstance(last, np.random.RandomState) else None
    return EpisodeTable(
        tasks=np.stack(tasks, axis=1) if streams else np.zeros((0, cfg.max_steps + 1, cfg.n_agents, 3)),
        harvest=np.stack(harvest, axis=1) if streams else np.zeros((0, cfg.max_steps, cfg.n_agents)),
        final_stream_state=final_state,
    )


class MECEnv:
    """E independent MEC environments stepped together (all share the same devices).

    Parameters
    ----------
    cfg: the environment's constants.
    num_envs: E, the number of environments in the batch.
    rng_mode: ``reference`` or ``independent`` (see :mod:`ccm_madrl.mec.rng`).
    env_seed: seed of the construction draws (device constants); also the base of evaluation seeds.
    stream: in ``reference`` mode, the shared legacy stream to draw from (the published code's NumPy
        global stream); if given, it is seeded with ``env_seed`` and the construction draws are
        made from it, exactly like the published constructor.
    devices: use these device constants instead of drawing them.
    task_stream: the stream new tasks are drawn from; by default the construction stream (as
        published: one global stream for everything).
    """

    def __init__(
        self,
        cfg: MECConfig | None = None,
        num_envs: int = 1,
        rng_mode: str = "reference",
        env_seed: int = 37,
        stream: Stream | None = None,
        devices: Devices | None = None,
        task_stream: Stream | None = None,
    ):
        self.cfg = cfg or MECConfig()
        if int(num_envs) < 1:
            raise ValueError(f"num_envs: must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.rng_mode = check_rng_mode(rng_mode)
        self.env_seed = int(env_seed)
        if stream is None:
            stream = construction_stream(rng_mode, env_seed)
        elif isinstance(stream, np.random.RandomState):
            stream.seed(self.env_seed)
        self.devices = devices if devices is not None else draw_devices(self.cfg, stream)
        self.source: StreamTasks | TableTasks = StreamTasks(
            stream if task_stream is None else task_stream, self.num_envs
        )
        n = self.cfg.n_agents
        self.energy = np.zeros((self.num_envs, n))
        self.tasks = np.zeros((self.num_envs, n, 3))
        self.t = 0
        self._needs_reset = True

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | Sequence[int] | None = None, table: EpisodeTable | None = None) -> np.ndarray:
        """Start new episodes. ``seed`` re-seeds the task streams (the published ``reset(seed)``):
        an int for a single environment (or one shared stream), a sequence for one per environment.
        ``table`` replays recorded episodes instead of drawing."""
        if table is not None:
            if table.tasks.shape[0] != self.num_envs:
                raise ValueError(
                    f"table: has {table.tasks.shape[0]} episodes, environment batch is {self.num_envs}"
                )
            self.source = TableTasks(table)
        elif seed is not None:
            self._reseed(seed)
        elif isinstance(self.source, TableTasks):
            raise ValueError("reset: this environment replays a table; pass table= or seed=")
        self.tasks = np.array(self.source.reset(self.cfg), dtype=np.float64)
        energy = np.broadcast_to(self.devices.initial_energy, (self.num_envs, self.cfg.n_agents)).copy()
        if self.cfg.reset_energy_clip:
            energy = np.clip(energy, self.cfg.min_ene, self.cfg.max_ene)
        self.energy = energy
        self.t = 0
        self._needs_reset = False
        return self.observation()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, dict]:
        """Step all environments. Returns (obs (E,N,7), reward (E,), done, info).

        ``info`` holds ``energy_penalty_frac`` and ``time_penalty_frac`` (E,) and the full
        :class:`StepOutcome` under ``outcome``.
        """
        if self._needs_reset:
            raise RuntimeError("step: call reset() first")
        action = self.check_action(action)
        harvest, new_tasks = self.source.step(self.cfg)
        out: StepOutcome = step_dynamics(self.cfg, self.devices, self.energy, self.tasks, action, harvest)
        self.energy = out.energy
        self.tasks = np.array(new_tasks, dtype=np.float64)
        self.t += 1
        done = self.t >= self.cfg.max_steps
        if done:  # published: the counter wraps; stepping on continues the same task stream
            self.t = 0
        info = {
            "energy_penalty_frac": out.energy_penalty_frac,
            "time_penalty_frac": out.time_penalty_frac,
            "outcome": out,
        }
        return self.observation(), out.reward, done, info

    def observation(self) -> np.ndarray:
        e, n = self.num_envs, self.cfg.n_agents
        obs = np.empty((e, n, 7))
        d = self.devices
        obs[..., 0] = d.power
        obs[..., 1] = d.gain
        obs[..., 2] = self.energy
        obs[..., 3:6] = self.tasks
        obs[..., 6] = d.res
        return obs

    # ------------------------------------------------------------------ validation
    def check_action(self, action: Any) -> np.ndarray:
        """Validate a hybrid action; returns it as float64 (E, N, 3). Raises ValueError naming the
        problem."""
        a = np.asarray(action, dtype=np.float64)
        e, n = self.num_envs, self.cfg.n_agents
        if a.shape == (n, 3) and e == 1:
            a = a[None]
        if a.shape != (e, n, 3):
            raise ValueError(
                f"action: expected shape ({e}, {n}, 3) = (envs, agents, [x, alpha, rho])"
                + (f" or ({n}, 3)" if e == 1 else "")
                + f", got {a.shape}"
            )
        if not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(
                f"action: non-finite value {a[tuple(bad)]} at env {bad[0]}, agent {bad[1]}, "
                f"field {ACTION_FIELDS[bad[2]]!r}"
            )
        x = a[..., 0]
        if not np.isin(x, (0.0, 1.0, 2.0)).all():
            bad = np.argwhere(~np.isin(x, (0.0, 1.0, 2.0)))[0]
            raise ValueError(
                f"action: field 'x' must be 0 (local), 1 (offload) or 2 (offload, punished); got "
                f"{x[tuple(bad)]} at env {bad[0]}, agent {bad[1]}"
            )
        frac = a[..., 1:]
        if ((frac < 0.01) | (frac > 1.0)).any():
            bad = np.argwhere((frac < 0.01) | (frac > 1.0))[0]
            raise ValueError(
                f"action: field {ACTION_FIELDS[1 + bad[2]]!r} must lie in [0.01, 1]; got "
                f"{frac[tuple(bad)]} at env {bad[0]}, agent {bad[1]}"
            )
        return a

    # ------------------------------------------------------------------ internals
    def _reseed(self, seed: int | Sequence[int]) -> None:
        """An int re-seeds the current stream(s) (a shared legacy stream in place, as the published
        ``np.random.seed``); a sequence gives every environment its own stream seeded per entry."""
        src = self.source
        if np.ndim(seed) == 0:
            k = int(seed)  # type: ignore[arg-type]
            if isinstance(src, StreamTasks) and src.shared is not None:
                if isinstance(src.shared, np.random.RandomState):
                    src.shared.seed(k)
                else:
                    self.source = StreamTasks(eval_stream(self.rng_mode, self.env_seed, k), self.num_envs)
                return
            seeds = [k] * self.num_envs
        else:
            seeds = [int(s) for s in seed]  # type: ignore[union-attr]
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: need one per environment ({self.num_envs}), got {len(seeds)}")
        self.source = StreamTasks(
            [eval_stream(self.rng_mode, self.env_seed, s) for s in seeds], self.num_envs
        )
