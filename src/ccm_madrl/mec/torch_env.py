"""The MEC environment as batched torch operations: R runs x E environments on one device.

:class:`TorchMECEnv` steps ``R * E`` environments (N agents each) as one tensor program: the H2 queue
with the published re-adding quirk, TOBM, the rewards and the end of an episode, with no Python loop
over environments or clients and no copy to the host in the step (which returns the NumPy step's
:class:`~ccm_madrl.mec.dynamics.StepOutcome`, of tensors). In float64 it reproduces
:class:`~ccm_madrl.mec.env.MECEnv` (``tests/test_torch_env.py``): states bit-identical, rewards to
rounding of the sum over agents.

Random draws (both RNG modes) are made on the host from the very streams the NumPy environment uses
(:mod:`ccm_madrl.mec.rng`: ``RandomState`` in ``reference`` mode, PCG64 ``Generator`` in
``independent`` mode), one block per episode (the reset's tasks and, per step, the harvest and the new
tasks, in the NumPy environment's order), copied to the device once. An episode cut short by a reset
rewinds the streams to where the NumPy environment would have left them. Evaluation tables
(:class:`~ccm_madrl.mec.env.EpisodeTable`) are copied once and kept on the device.

Exactness. Per-device constants that need ``10 ** x`` (transmit power in W, channel gain) are computed
by NumPy on the host, as the NumPy environment computes them; every divisor is a tensor on the
device (CUDA turns a division by a host scalar into a multiplication by its reciprocal). The one
transcendental left in the step, ``log``, is torch's (SLEEF on the CPU), which differs from NumPy's
(the C library's) by one unit in the last place for about 1 % of its arguments: that moves offload
times by 1 ulp, rewards by ~1e-16 relative and the batteries only if an update of ~1e-7 J rounds
differently (not seen in the tests). Offloaded tasks whose offload time reaches MAX_DDL finish at or
after it, so their capped time is 1 whatever their place in the queue: the queue is simulated for the
others only, and NumPy's unstable ``argsort`` tie-break among punished tasks (all MAX_DDL) cannot
change any result.

The H2 queue is sequential in the order of offload times; it runs as a loop over queue positions
(each a batched min and scatter over all environments). Its length is set by ``queue_bound``: the most
offloaded tasks per environment the step simulates (``None``: N, exact for any action; an int, e.g.
the master's selection limit: a static loop with no host read; ``"batch"``: the batch's largest count,
read from the device each step). A step with more offloaded tasks than an int bound is flagged on the
device and raised by the next :meth:`TorchMECEnv.reset` or :meth:`TorchMECEnv.check`, as are invalid
actions (the step itself does not validate, to stay on the device).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .config import MECConfig
from .dynamics import StepOutcome
from .env import ACTION_FIELDS, EpisodeTable, MECEnv, StreamTasks
from .rng import Stream

PROBLEMS = (
    "an action's x is not 0, 1 or 2, or a fraction lies outside [0.01, 1] or is not finite",
    "more offloaded tasks than queue_bound in one environment",
)


class DeviceConstants:
    """The MEC system's constants on a device: per-device vectors (N,) and 0-dim divisors."""

    def __init__(self, cfg: MECConfig, power, gain, res, device, dtype):
        def vec(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64), device=device).to(dtype)

        def one(v: float) -> torch.Tensor:
            return torch.tensor(float(v), dtype=torch.float64, device=device).to(dtype)

        self.power, self.gain, self.res = vec(power), vec(gain), vec(res)
        self.watts = vec(10 ** ((np.asarray(power) - 30) / 10))  # NumPy's pow, as the NumPy env
        self.gain_lin = vec(10 ** (np.asarray(gain) / 10))
        self.res_hz = vec(np.asarray(res) * 10**9)
        self.ln2 = one(np.log(2))
        self.k_channel = one(cfg.k_channel)
        self.capability = one(cfg.capability_e * 10**9)
        self.max_ddl = one(cfg.max_ddl)
        self.bandwidth = cfg.w_bandwidth * 10**6


def h2_finish_times_torch(
    t_off: torch.Tensor, t_proc: torch.Tensor, x: torch.Tensor, n_units: int, cap, bound: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Finish times (B, N) of the offloaded tasks (``x`` 0/1) in mode H2, as
    :func:`~ccm_madrl.mec.dynamics.h2_finish_times`, and whether an environment had more than
    ``bound`` offloaded tasks below ``cap`` (B,) (then its finish times past ``bound`` are not exact).

    Tasks are visited in order of offload time; those at or past ``cap`` (MAX_DDL) are not queued
    (they finish after ``cap`` anyway, so their normalised time is 1) and come last in the order."""
    off = x == 1
    key = torch.where(off, t_off, torch.full_like(t_off, float("inf")))
    order = torch.argsort(key, dim=-1, stable=True)
    s_off, s_proc = t_off.gather(1, order), t_proc.gather(1, order)
    live = key.gather(1, order) < cap  # queued tasks: a prefix of the order
    fin = s_off + s_proc  # exact for the first n_units, and >= cap for the unqueued
    n, bound = t_off.shape[1], max(bound, n_units)
    for p in range(n_units, min(bound, n)):
        if p == n_units:
            unit = fin[:, :n_units].clone()  # the units after the first n_units tasks
        act = live[:, p : p + 1]
        add = torch.where(act, s_proc[:, :p], torch.zeros_like(s_proc[:, :p]))
        for j in range(p):  # the quirk: every earlier task adds its processing time again
            _, i = unit.min(dim=1, keepdim=True)
            unit.scatter_add_(1, i, add[:, j : j + 1])
        low, i = unit.min(dim=1, keepdim=True)
        f = torch.maximum(s_off[:, p : p + 1], low) + s_proc[:, p : p + 1]
        fin[:, p : p + 1] = torch.where(act, f, fin[:, p : p + 1])
        unit.scatter_(1, i, torch.where(act, f, low))
    over = live[:, bound] if bound < n else torch.zeros_like(live[:, 0])
    finish = torch.empty_like(fin).scatter_(1, order, fin)
    return torch.where(off, finish, torch.zeros_like(finish)), over


def step_dynamics_torch(
    cfg: MECConfig,
    c: DeviceConstants,
    energy: torch.Tensor,
    tasks: torch.Tensor,
    action: torch.Tensor,
    harvest: torch.Tensor,
    bound: int,
) -> tuple[StepOutcome, torch.Tensor]:
    """One step of B environments (tensors (B, N, ...)), the operations of
    :func:`~ccm_madrl.mec.dynamics.step_dynamics` in the same order: its :class:`StepOutcome`, of
    tensors, and the over-bound flags (B,)."""
    size, cycle, ddl = tasks[..., 0], tasks[..., 1], tasks[..., 2]
    x, alpha, rho = action[..., 0], action[..., 1], action[..., 2]
    a_res = c.res_hz * alpha
    a_power = c.watts * rho
    rate = c.bandwidth * torch.log(1 + a_power * c.gain_lin) / c.ln2 / c.k_channel
    t_proc = size * 8 * 1024 * cycle / c.capability
    t_local = size * 8 * 1024 * cycle / a_res
    punished = x == 2
    t_off = torch.where(punished, c.max_ddl, size * 8 * 1024 / rate)
    x = torch.where(punished, torch.ones_like(x), x)
    if cfg.mode == "H2":
        finish, over = h2_finish_times_torch(t_off, t_proc, x, cfg.n_units, c.max_ddl, bound)
    else:
        finish, over = t_off + t_proc, torch.zeros_like(punished[:, 0])
    t = torch.minimum((1 - x) * t_local + x * finish, c.max_ddl) / c.max_ddl
    e_local = cfg.k_energy_local * size * 8 * 1024 * cycle * a_res
    e = (1 - x) * e_local + x * (a_power * t_off)
    new_energy = torch.clamp(energy - e * 1e-6 + harvest * 1e-6, 0, cfg.max_ene)
    t = torch.where(new_energy <= 0, torch.ones_like(t), t)
    p_t = torch.clamp_min(t - ddl / c.max_ddl, 0)
    p_e = torch.clamp_min(cfg.min_ene - new_energy, 0) * 10**6
    r = -(cfg.lambda_e * e + cfg.lambda_t * t) - (cfg.lambda_e * p_e + cfg.lambda_t * p_t)
    n = cfg.n_agents
    fractions = [(p != 0).sum(dim=-1).to(r.dtype) / n for p in (p_e, p_t)]
    return StepOutcome(new_energy, t, e, p_t, p_e, r, r.sum(dim=-1), *fractions), over


def bad_actions(action: torch.Tensor) -> torch.Tensor:
    """Whether each environment's action (B, N, 3) breaks :meth:`MECEnv.check_action`'s rules (B,)."""
    x, frac = action[..., 0], action[..., 1:]
    bad_x = ~((x == 0) | (x == 1) | (x == 2))
    bad_f = ~((frac >= 0.01) & (frac <= 1.0))  # also catches NaN
    return bad_x.any(dim=-1) | bad_f.any(dim=-1).any(dim=-1)


def _stream_state(s: Stream):
    return s.get_state() if isinstance(s, np.random.RandomState) else s.bit_generator.state


def _set_stream_state(s: Stream, state) -> None:
    if isinstance(s, np.random.RandomState):
        s.set_state(state)
    else:
        s.bit_generator.state = state


class TorchMECEnv:
    """R runs x E environments of the MEC system stepped as one batch of tensors on ``device``.

    Each run r has the task streams a :class:`~ccm_madrl.mec.env.MECEnv` of E environments built with
    the same arguments has (``task_streams[r]``: one stream shared by its E environments or one per
    environment; default: the NumPy environment's default), so run r's episodes are that NumPy
    environment's. Observations are (R, E, N, 7), actions (R, E, N, 3) (or (R * E, N, 3), run-major),
    rewards (R, E). ``queue_bound``: see the module's docstring. ``dtype`` float64 reproduces the NumPy
    environment; float32 is faster on a GPU (its difference: ``docs/device.md``)."""

    def __init__(
        self,
        cfg: MECConfig | None = None,
        num_runs: int = 1,
        num_envs: int = 1,
        rng_mode: str = "reference",
        env_seed: int = 37,
        task_streams: Sequence | None = None,
        devices=None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        queue_bound: int | str | None = None,
    ):
        self.cfg = cfg or MECConfig()
        self.num_runs, self.num_envs = int(num_runs), int(num_envs)
        if self.num_runs < 1:
            raise ValueError(f"num_runs: must be >= 1, got {num_runs}")
        streams = [None] * self.num_runs if task_streams is None else list(task_streams)
        if len(streams) != self.num_runs:
            raise ValueError(f"task_streams: need one per run ({self.num_runs}), got {len(streams)}")
        self.hosts = [
            MECEnv(self.cfg, self.num_envs, rng_mode, env_seed, devices=devices, task_stream=s)
            for s in streams
        ]
        self.rng_mode, self.env_seed = self.hosts[0].rng_mode, self.hosts[0].env_seed
        self.devices = self.hosts[0].devices
        self.device, self.dtype = torch.device(device), dtype
        self.queue_bound = self._check_bound(queue_bound)
        self.consts = DeviceConstants(self.cfg, *self._per_env(self.devices), self.device, dtype)
        b, n = self.batch_size, self.cfg.n_agents
        self.energy = torch.zeros((b, n), dtype=dtype, device=self.device)
        self.tasks = torch.zeros((b, n, 3), dtype=dtype, device=self.device)
        self._flags = torch.zeros(len(PROBLEMS), dtype=torch.bool, device=self.device)
        self.t, self._k, self._needs_reset = 0, 0, True
        self._block: tuple | None = None  # (harvest (T, B, N), new tasks (T, B, N, 3)) of this episode
        self._drawn: tuple | None = None  # (stream states before the block, whether it began with a reset)
        self._table: tuple | None = None  # (table, its tensors on the device), while replaying one

    @property
    def batch_size(self) -> int:
        return self.num_runs * self.num_envs

    def _check_bound(self, bound) -> int | str:
        if bound is None:
            return self.cfg.n_agents
        if bound == "batch" or (isinstance(bound, int) and not isinstance(bound, bool) and bound >= 1):
            return bound
        raise ValueError(f"queue_bound: must be None, 'batch' or an int >= 1, got {bound!r}")

    def _per_env(self, dev) -> tuple:
        """power, gain, res as (N,), or (R * E, N) where the devices differ per environment."""
        arrays = [np.asarray(a, dtype=np.float64) for a in (dev.power, dev.gain, dev.res)]
        return tuple(np.tile(a, (self.num_runs, 1)) if a.ndim == 2 else a for a in arrays)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.require(a, np.float64, ["C", "W"])).to(self.device, self.dtype)

    # ------------------------------------------------------------------ API
    def reset(self, seed=None, table: EpisodeTable | None = None) -> torch.Tensor:
        """Start new episodes, as :meth:`MECEnv.reset` of every run: ``seed`` an int, a sequence of E
        (the same for every run) or an (R, E) array re-seeds the streams; ``table`` replays recorded
        episodes (R * E of them, run-major, or E, the same for every run). Raises what the steps
        since the last check flagged (:meth:`check`)."""
        self.check()
        if table is not None:
            self._rewind()
            self._block, self.tasks = self._table_block(table)
        elif seed is not None:
            self._drawn = None
            seeds = np.asarray(seed)
            per_run = seeds if seeds.ndim == 2 else np.broadcast_to(seeds, (self.num_runs, *seeds.shape))
            if len(per_run) != self.num_runs:
                raise ValueError(f"seed: an (R, E) array needs {self.num_runs} rows, got {len(per_run)}")
            for host, s in zip(self.hosts, per_run):
                host._reseed(int(s) if np.ndim(s) == 0 else [int(v) for v in s])
            self._table = None
            self.tasks = self._draw(reset=True)
        elif self._table is not None:
            raise ValueError("reset: this environment replays a table; pass table= or seed=")
        else:
            self._rewind()
            self.tasks = self._draw(reset=True)
        self.reset_energy()
        self.t = self._k = 0
        self._needs_reset = False
        return self.observation()

    def step(self, action) -> tuple[torch.Tensor, torch.Tensor, bool, dict]:
        """Step every environment: (obs (R, E, N, 7), reward (R, E), done, info) with ``info`` as
        :meth:`MECEnv.step`'s (``energy_penalty_frac``, ``time_penalty_frac`` (R, E), ``outcome``)."""
        if self._needs_reset:
            raise RuntimeError("step: call reset() first")
        a = self._action(action)
        if self._k >= self._block[0].shape[0]:
            if self._table is not None:
                raise RuntimeError("the recorded episode table is exhausted; reset the environment")
            self._draw(reset=False)  # the counter wraps: the streams go on, one block per episode
        harvest, new_tasks = self._block[0][self._k], self._block[1][self._k]
        self._flags[0] |= bad_actions(a).any()
        bound = self.queue_bound
        if bound == "batch":  # the one host read of a step, on request
            bound = int(((a[..., 0] != 0).sum(dim=-1)).max())
        out, over = step_dynamics_torch(self.cfg, self.consts, self.energy, self.tasks, a, harvest, bound)
        self._flags[1] |= over.any()
        self.energy, self.tasks = out.energy, new_tasks
        self.t, self._k = self.t + 1, self._k + 1
        done = self.t >= self.cfg.max_steps
        if done:
            self.t = 0
        shaped = StepOutcome(**{k: self._runs(v) for k, v in vars(out).items()})
        info = {
            "energy_penalty_frac": shaped.energy_penalty_frac,
            "time_penalty_frac": shaped.time_penalty_frac,
            "outcome": shaped,
        }
        return self.observation(), shaped.reward, done, info

    def play(
        self, tasks: torch.Tensor, harvest: torch.Tensor, start: int = 0, energy: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Play episodes whose draws were made elsewhere (a training loop that draws its exploration
        noise into the same host block, ``experiment/device.py``): ``tasks`` (T + 1, B, N, 3) and
        ``harvest`` (T, B, N), tensors on the device, from step ``start`` with the batteries
        ``energy`` (B, N) (default: the reset's). The environment's own streams are not touched.
        Returns the observation of step ``start``."""
        self.check()
        self._table, self._drawn = None, None
        self._block, self.tasks = (harvest, tasks[1:]), tasks[start]
        if energy is None:
            self.reset_energy()
        else:
            self.energy = energy
        self.t = self._k = start
        self._needs_reset = False
        return self.observation()

    def reset_energy(self) -> None:
        """The batteries of a reset (the devices' initial energy, clipped when ``reset_energy_clip``)."""
        energy = self._tensor(
            np.broadcast_to(self.devices.initial_energy, (self.num_envs, self.cfg.n_agents))
        )
        energy = energy.repeat(self.num_runs, 1) if energy.shape[0] != self.batch_size else energy
        self.energy = (
            torch.clamp(energy, self.cfg.min_ene, self.cfg.max_ene) if self.cfg.reset_energy_clip else energy
        )

    def observation(self) -> torch.Tensor:
        c, shape = self.consts, self.energy.shape
        obs = torch.stack(
            [
                c.power.expand(shape),
                c.gain.expand(shape),
                self.energy,
                *self.tasks.unbind(-1),
                c.res.expand(shape),
            ],
            dim=-1,
        )
        return self._runs(obs)

    def check(self) -> None:
        """Raise ValueError for what a step since the last check flagged (one read from the device)."""
        flags = self._flags.tolist()
        self._flags.zero_()
        found = [p for p, f in zip(PROBLEMS, flags) if f]
        if found:
            raise ValueError("step: " + "; ".join(found) + f" (fields {', '.join(ACTION_FIELDS)})")

    # ------------------------------------------------------------------ internals
    def _runs(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(self.num_runs, self.num_envs, *v.shape[1:])

    def _action(self, action) -> torch.Tensor:
        a = torch.as_tensor(action, device=self.device).to(self.dtype)
        r, e, n = self.num_runs, self.num_envs, self.cfg.n_agents
        if a.shape in ((r, e, n, 3), (r * e, n, 3)):
            return a.reshape(r * e, n, 3)
        raise ValueError(
            f"action: expected shape ({r}, {e}, {n}, 3) = (runs, envs, agents, [x, alpha, rho]) or "
            f"({r * e}, {n}, 3), got {tuple(a.shape)}"
        )

    def _sources(self) -> list[StreamTasks]:
        return [h.source for h in self.hosts]

    def _draw(self, reset: bool) -> torch.Tensor | None:
        """Draw this episode's block from every run's streams, in the NumPy environment's order (the
        reset's tasks, then per step the harvest and the new tasks), and copy it to the device once.
        Returns the reset's tasks (B, N, 3) when ``reset``."""
        cfg, sources = self.cfg, self._sources()
        self._drawn = ([[_stream_state(s) for s in src.streams] for src in sources], reset)
        first = np.concatenate([src.reset(cfg) for src in sources]) if reset else None
        e, n, steps = self.num_envs, cfg.n_agents, cfg.max_steps
        harvest, tasks = np.empty((steps, self.batch_size, n)), np.empty((steps, self.batch_size, n, 3))
        for k in range(steps):  # step-major: a step reads one contiguous slice
            for r, src in enumerate(sources):
                harvest[k, r * e : (r + 1) * e], tasks[k, r * e : (r + 1) * e] = src.step(cfg)
        self._block = (self._tensor(harvest), self._tensor(tasks))
        self._k = 0
        return None if first is None else self._tensor(first)

    def _rewind(self) -> None:
        """Leave the streams where the NumPy environment would: an episode cut short by a reset drew
        only its first ``_k`` steps there."""
        if self._drawn is None or self._table is not None or self._k >= self.cfg.max_steps:
            return
        states, began_with_reset = self._drawn
        for src, st in zip(self._sources(), states):
            for s, state in zip(src.streams, st):
                _set_stream_state(s, state)
            if began_with_reset:
                src.reset(self.cfg)
            for _ in range(self._k):
                src.step(self.cfg)
        self._drawn = None

    def _table_block(self, table: EpisodeTable) -> tuple[tuple, torch.Tensor]:
        """The table's tensors on the device (copied once per table), as (block, reset's tasks)."""
        if self._table is None or self._table[0] is not table:
            n_ep = table.tasks.shape[0]
            if n_ep not in (self.num_envs, self.batch_size):
                raise ValueError(
                    f"table: has {n_ep} episodes, need {self.num_envs} (every run) or {self.batch_size}"
                )
            tasks, harvest = self._tensor(table.tasks), self._tensor(table.harvest)
            if n_ep != self.batch_size:
                tasks, harvest = tasks.repeat(self.num_runs, 1, 1, 1), harvest.repeat(self.num_runs, 1, 1)
            self._table = (table, tasks.transpose(0, 1).contiguous(), harvest.transpose(0, 1).contiguous())
        _, tasks, harvest = self._table
        self._k = 0
        return (harvest, tasks[1:]), tasks[0]
