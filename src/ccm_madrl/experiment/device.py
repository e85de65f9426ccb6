"""The device-resident path of the one engine (``training.device_resident``; ``docs/device.md``).

For the R runs of an :class:`~ccm_madrl.experiment.engine.Engine` (a run alone or a pack) the
training environments (R x 1) and the evaluation environments (R x E) are
:class:`~ccm_madrl.mec.torch_env.TorchMECEnv` on the learner's device, acting is the actors' forward,
the exploration noise, the master's selection (:mod:`~ccm_madrl.agents.selection_torch`) and the
hybrid action as torch operations, and the episode's transitions stay torch tensors on the device
until the learner stores them in its replay. Nothing is copied to the host within an episode: the
per-step metrics (reward, exceeded, penalty fractions, non-finite actions) leave the device once per
episode.

Random draws. What a run draws from its host streams in an episode (both RNG modes: the reset's
tasks; per step the exploration noise, the exploration coin, the random subset, the harvest and the
new tasks) is drawn on the host in the order of the published loop, as one block per episode copied
to the device once. The coin is drawn only where the proposals exceed the server's limits, which is
known on the device only: the block is drawn for a speculated pattern of exceeded steps (the run's
pattern of its previous episode; all steps at first), and the episode's one copy of metrics checks
it. Where the speculation was wrong, the run's streams are rewound to that step (saved states) and
redrawn with the true value there, and the episode is played again from the first such step of any
run (the batteries of that step kept): every pass fixes the first wrong step of every run, so an
episode takes at most T + 1 passes and ends with exactly the draws of the published loop.
``DevicePath.passes`` counts them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..agents.selection import explore_select
from ..agents.selection_torch import greedy_master_select_torch
from ..config.experiment import device_resident_unsupported
from ..mec.dynamics import draw_harvest, draw_tasks, scale_fraction
from ..mec.rng import scalar_uniform01, standard_normal
from ..mec.torch_env import TorchMECEnv

LOCAL = (0.0, 1.0, 1.0)  # the all-local action of a run whose actions are not finite (x 0, alpha = rho = 1)


def device_resident(cfg, device: torch.device) -> bool:
    """Whether a run of ``cfg`` on ``device`` takes the device-resident path: ``on``, or ``auto`` on a
    CUDA device, for a config it supports (``on`` with another is refused by the config)."""
    mode = cfg.training.device_resident
    if mode == "off" or device_resident_unsupported(cfg):
        return False
    return mode == "on" or torch.device(device).type == "cuda"


# ------------------------------------------------------------------------------ acting on the device
@torch.no_grad()
def candidate_q(critic, s32: torch.Tensor, u32: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Q (B, N) float64 of the candidate rows (bool (B, N)), -inf elsewhere, through the critic (one
    run's or a pack's). On a CPU the candidate rows only (``nonzero``, as the host path scores
    them); elsewhere every row, run-major (no data-dependent shape, no read of the count)."""
    joint = critic.joint(s32, u32)
    q = torch.full(cand.shape, -torch.inf, dtype=torch.float64, device=cand.device)
    if cand.device.type == "cpu":
        gi, ji = cand.nonzero(as_tuple=True)
        if gi.numel():
            q[gi, ji] = critic.rows_q(joint, gi, s32[gi, ji], u32[gi, ji], gi).double()
        return q
    b, n = cand.shape
    rows = torch.arange(b, device=cand.device).repeat_interleave(n)
    every = critic.rows_q(joint, rows, s32.reshape(b * n, -1), u32.reshape(b * n, -1), None)
    return torch.where(cand, every.double().reshape(b, n), q)


@torch.no_grad()
def device_act(learner, states: torch.Tensor, noise=None, eps=None, explore=None, subset=None) -> tuple:
    """One acting step of B environments (states (B, N, 7) float64) as the host path's ``act``:
    the actors' outputs (plus ``noise`` (B, N, 3) times ``eps`` (B,), clipped, when exploring), the
    master's decision (the random ``subset`` (B, N) where ``explore`` (B,) and the limits are
    exceeded, the Q-ranked greedy acceptance elsewhere), the hybrid action. Returns (u, selected,
    hybrid, exceeded)."""
    s32 = states.float()
    u = learner.actors(s32).double()
    if noise is not None:
        u = torch.clamp(u + noise * eps[:, None, None], -1, 1)
    cfg = learner.env_cfg
    q = candidate_q(learner.critic, s32, u.float(), u[..., 0] > 0)
    sel, exceeded, _ = greedy_master_select_torch(u, states[..., 3], q, learner.limit, cfg.s_e)
    if explore is not None:
        sel = torch.where((exceeded & explore)[:, None], subset, sel)
    hybrid = torch.stack([sel, scale_fraction(u[..., 1]), scale_fraction(u[..., 2])], dim=-1)
    return u, sel, hybrid, exceeded


def finite_or_local(hybrid: torch.Tensor, runs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The hybrid actions with every run whose actions are not finite given the all-local action,
    and which runs those are (R,), on the device (the host path's ``finite_actions``)."""
    bad = ~torch.isfinite(hybrid).reshape(runs, -1).all(dim=1)
    per_env = bad.repeat_interleave(hybrid.shape[0] // runs)
    local = torch.tensor(LOCAL, dtype=hybrid.dtype, device=hybrid.device)
    return torch.where(per_env[:, None, None], local, hybrid), bad


# ------------------------------------------------------------------------------ host draws
def _snapshot(stream):
    if isinstance(stream, np.random.RandomState):
        return stream.get_state()
    if isinstance(stream, np.random.Generator):
        return stream.bit_generator.state
    return stream.getstate()  # random.Random


def _restore(stream, state) -> None:
    if isinstance(stream, np.random.RandomState):
        stream.set_state(state)
    elif isinstance(stream, np.random.Generator):
        stream.bit_generator.state = state
    else:
        stream.setstate(state)


class RunDraws:
    """One run's host draws of its training episodes, from the streams the host path draws from
    (its training environment's task stream, its noise, coin and subset streams), in the published
    order per step: noise, coin (where exceeded), subset (where the coin says explore), harvest,
    new tasks. ``spec``: the speculated exceeded pattern of the episode (T,)."""

    def __init__(self, member, steps: int):
        rng, self.cfg = member.rng, member.cfg.env
        self.tasks = member.env.source.streams[0]
        self.noise, self.coin, self.subset = rng.noise, rng.explore, rng.explore_subset
        unique = {id(s): s for s in (self.tasks, self.noise, self.coin, self.subset)}
        self.streams = list(unique.values())
        self.spec = np.ones(steps, dtype=bool)
        self.saved: list = [None] * steps  # the streams' states before each step's draws

    def reset_tasks(self) -> np.ndarray:
        """The tasks (N, 3) of the episode's reset (drawn before the evaluation, as the host path)."""
        return draw_tasks(self.cfg, self.tasks)

    def draw(self, block: dict, r: int, start: int, eps: float) -> None:
        """Run ``r``'s draws of steps ``start`` ... into ``block`` (host arrays, step-major), from the
        streams' states before step ``start`` (saved when it was drawn before)."""
        cfg, n = self.cfg, self.cfg.n_agents
        if self.saved[start] is not None:
            for s, st in zip(self.streams, self.saved[start]):
                _restore(s, st)
        for t in range(start, len(self.spec)):
            self.saved[t] = [_snapshot(s) for s in self.streams]
            block["noise"][t, r] = standard_normal(self.noise, (1, n, 3))[0]
            block["explore"][t, r], block["subset"][t, r] = False, 0.0
            if self.spec[t] and scalar_uniform01(self.coin) <= eps:
                block["explore"][t, r] = True
                block["subset"][t, r] = explore_select(
                    block["tasks"][t, r, :, 0], cfg.selection_limit, cfg.s_e, self.subset
                )
            block["harvest"][t, r] = draw_harvest(cfg, self.tasks)
            block["tasks"][t + 1, r] = draw_tasks(cfg, self.tasks)

    def new_episode(self) -> None:
        self.saved = [None] * len(self.spec)


# ------------------------------------------------------------------------------ the path
class DevicePath:
    """The device-resident episode of an engine's members (``learner``: the batch's acting program,
    one run's learner or the pack): :meth:`reset_train`, :meth:`evaluate`, :meth:`train_episode`."""

    def __init__(self, members: list, learner):
        m0 = members[0]
        cfg = m0.cfg
        self.learner, self.runs, self.cfg = learner, len(members), cfg.env
        self.device = learner.device
        self.steps = cfg.env.max_steps
        kw = dict(devices=m0.env.devices, device=self.device, queue_bound=cfg.env.selection_limit)
        self.env = TorchMECEnv(cfg.env, self.runs, 1, cfg.rng_mode, cfg.env_seed, **kw)
        self.eval_table = m0.eval_table
        self.eval_env = None
        if self.eval_table is not None:
            e = self.eval_table.tasks.shape[0]
            self.eval_env = TorchMECEnv(cfg.env, self.runs, e, cfg.rng_mode, cfg.env_seed, **kw)
        self.draws = [RunDraws(m, self.steps) for m in members]
        self.passes: list[int] = []  # passes of each training episode played (1: the speculation held)
        self.block: dict | None = None

    @classmethod
    def make(cls, members: list, learner) -> DevicePath | None:
        """The path of these members, None when their config keeps them on the host path."""
        if not members or not device_resident(members[0].cfg, getattr(learner, "device", "cpu")):
            return None
        return cls(members, learner)

    def _tensor(self, a: np.ndarray, dtype=torch.float64) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, dtype)

    def reset_train(self) -> None:
        """The training episode's reset: every run's reset tasks, drawn on the host."""
        t, r, n = self.steps, self.runs, self.cfg.n_agents
        self.block = {
            "tasks": np.empty((t + 1, r, n, 3)),
            "harvest": np.empty((t, r, n)),
            "noise": np.empty((t, r, n, 3)),
            "explore": np.zeros((t, r), dtype=bool),
            "subset": np.zeros((t, r, n)),
        }
        for i, d in enumerate(self.draws):
            d.new_episode()
            self.block["tasks"][0, i] = d.reset_tasks()

    def _on_device(self) -> dict:
        b = self.block
        out = {k: self._tensor(v) for k, v in b.items() if k != "explore"}
        out["explore"] = self._tensor(b["explore"], torch.bool)
        return out

    @torch.no_grad()
    def evaluate(self) -> tuple[np.ndarray, np.ndarray]:
        """The greedy policies on the fixed evaluation episodes: the per-environment sums over steps
        (4, R * E) of reward, exceeded, energy and time penalty fractions, and the runs whose actions
        were not finite (R,). The sums are taken on the host in the host path's order."""
        env, r = self.eval_env, self.runs
        obs = env.reset(table=self.eval_table)
        per_step = []
        for _ in range(self.steps):
            _, _, hybrid, exceeded = device_act(self.learner, obs.reshape(-1, *obs.shape[2:]))
            hybrid, bad = finite_or_local(hybrid, r)
            obs, rew, _, info = env.step(hybrid)
            fields = (rew, exceeded, info["energy_penalty_frac"], info["time_penalty_frac"])
            per_step.append((torch.stack([f.reshape(-1).double() for f in fields]), bad))
        values = torch.stack([v for v, _ in per_step]).cpu().numpy()  # the one copy of the evaluation
        bad = torch.stack([b for _, b in per_step]).any(dim=0).cpu().numpy()
        acc = np.zeros((4, env.batch_size))
        for v in values:
            acc += v
        return acc, bad

    def train_episode(self, eps: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        """One training episode of every run with exploration: (the transitions (R, T, ...), torch
        tensors on the device but the rewards (a host array), the sums over steps (4, R) of reward,
        exceeded and penalty fractions, the runs whose actions were not finite (R,))."""
        for i, d in enumerate(self.draws):
            d.draw(self.block, i, 0, float(eps[i]))
        eps_t = self._tensor(np.asarray(eps, dtype=np.float64))
        start, passes, energy = 0, 0, [None] * self.steps
        buf, values = self._buffers(), np.zeros((self.runs, self.steps, 5))
        while True:
            passes += 1
            values[:, start:] = self._play(self._on_device(), eps_t, start, energy, buf)
            start = self._respeculate(values[:, :, 1] > 0.5, start, eps)
            if start is None:
                break
        self.passes.append(passes)
        for d, exceeded in zip(self.draws, values[:, :, 1] > 0.5):
            d.spec = exceeded.copy()  # the next episode's speculation
        acc = np.zeros((4, self.runs))
        for t in range(self.steps):
            acc += values[:, t, :4].T
        buf["reward"] = values[:, :, 0].copy()
        return buf, acc, values[:, :, 4].any(axis=1)

    def _respeculate(self, exceeded: np.ndarray, start: int, eps: np.ndarray) -> int | None:
        """After a pass: the first step (of any run) whose speculated exceeded value was wrong, with
        each such run's streams redrawn from its first wrong step; None when every run's held."""
        first = None
        for i, d in enumerate(self.draws):
            wrong = np.flatnonzero(exceeded[i, start:] != d.spec[start:])
            if wrong.size:
                t = start + int(wrong[0])
                d.spec[t] = exceeded[i, t]
                d.draw(self.block, i, t, float(eps[i]))
                first = t if first is None else min(first, t)
        return first

    def _buffers(self) -> dict:
        r, t, n = self.runs, self.steps, self.cfg.n_agents
        shapes = {"states": (n, 7), "actions": (n, 3), "selected": (n,), "next_states": (n, 7), "done": ()}
        return {k: torch.zeros((r, t, *s), dtype=torch.float64, device=self.device) for k, s in shapes.items()}

    @torch.no_grad()
    def _play(self, block: dict, eps: torch.Tensor, start: int, energy: list, buf: dict) -> np.ndarray:
        """Steps ``start`` ... of the training episode on the device, the transitions into ``buf``;
        returns the values of those steps (R, T - start, 5): reward, exceeded, energy and time penalty fractions,
        actions not finite (the pass's one copy to the host)."""
        env, r = self.env, self.runs
        state = env.play(block["tasks"], block["harvest"], start, energy[start]).reshape(r, -1, 7)
        values = torch.zeros((r, self.steps - start, 5), dtype=torch.float64, device=self.device)
        for t in range(start, self.steps):
            energy[t] = env.energy
            u, sel, hybrid, exceeded = device_act(
                self.learner, state, block["noise"][t], eps, block["explore"][t], block["subset"][t]
            )
            hybrid, bad = finite_or_local(hybrid, r)
            nxt, rew, done, info = env.step(hybrid)
            nxt = nxt.reshape(r, -1, 7)
            for key, v in (("states", state), ("actions", u), ("selected", sel), ("next_states", nxt)):
                buf[key][:, t] = v
            buf["done"][:, t] = float(done)
            pen_e, pen_t = info["energy_penalty_frac"], info["time_penalty_frac"]
            values[:, t - start] = torch.stack([rew[:, 0], exceeded.double(), pen_e[:, 0], pen_t[:, 0], bad.double()], -1)
            state = nxt
        return values.cpu().numpy()
