"""A pack: R runs of one off-policy learner, trained as ONE program.

The runs share the algorithm, the architecture and every option that is not a per-run scalar; they
differ in seed and in the scalars :data:`PER_RUN_FIELDS`. The pack reuses the single-run learner's
loss code unchanged (it is the same class with a leading run dimension): the R x N actors are one
:class:`~ccm_madrl.agents.networks.PackedActor`, the R critics one
:class:`~ccm_madrl.agents.networks.PackedCritic` (batched matmuls; rows picked from a batch carry
their sample index, hence their run), the optimisers are :class:`BatchedOptimizer` with one learning
rate per agent / per run, the loss's means are per run (``_mean``), so each run's gradient is the
gradient of its own loss.

Batches are run-major: run r's P samples (or environments) are rows ``r * P ... (r + 1) * P - 1``.
Each run keeps its own single-run learner object (``runs[r]``): its replay buffer, reward statistics
and random streams are used in place, and its networks and optimiser states are written from /
read into the pack's slice r by :meth:`PackMixin.run_state_dict` / :meth:`load_run_state_dict`, so a
run's checkpoint has exactly the single-run format (it resumes alone or in any pack).

Python loops over the runs are only per-run bookkeeping: random draws, replay sampling (one
compiled sum-tree walk per run), reward statistics.
"""

from __future__ import annotations

import numpy as np
import torch

from ..mec.rng import standard_normal
from .base import Action
from .networks import PackedActor, PackedCritic
from .offpolicy import OffPolicyActorCritic
from .optim import BatchedOptimizer
from .utils import clip_per_agent_, hybrid_action

# agent.* fields that may differ between the runs of one pack (besides the run's seed)
PER_RUN_FIELDS = (
    "actor_lr",
    "critic_lr",
    "epsilon_start",
    "epsilon_end",
    "epsilon_decay",
    "reward_scale",
    "actor_grad_clip",
    "critic_grad_clip",
)

_OPT_STATE = {"adam": ("exp_avg", "exp_avg_sq"), "rmsprop": ("square_avg",), "sgd": ()}


class PackMixin:
    """Turns an :class:`OffPolicyActorCritic` subclass into a pack of R of its runs
    (:func:`make_pack` builds one). Per-run results come back as arrays / lists of length R."""

    runs: list[OffPolicyActorCritic]

    def _pack_init(self, singles: list[OffPolicyActorCritic]) -> None:
        s0 = singles[0]
        if not isinstance(s0, OffPolicyActorCritic):
            raise ValueError(f"pack: {type(s0).__name__} is not an off-policy actor-critic learner")
        if s0.actors.stochastic:
            raise ValueError("pack: stochastic actors (actor_reg: entropy) cannot be packed")
        self.__dict__.update(s0.__dict__)  # what every run shares: env, schedule, loss parts, device
        self.runs = list(singles)
        self.n_runs = r = len(singles)
        a0 = s0.actors
        self.actors = PackedActor(
            r,
            a0.n_agents,
            state_dim=a0.state_dim,
            action_dim=a0.action_dim,
            hidden=a0.hidden,
            activation=a0.activation_name,
            init_w=a0.init_w,
            layernorm=a0.norm is not None,
            shared=a0.shared,
        )
        self.actors.in_lo, self.actors.in_span = a0.in_lo, a0.in_span
        self.critic = PackedCritic(r, s0.critic)
        self._place_networks()
        k = self.actors.nets_per_run
        self.actor_params = list(self.actors.parameters())
        kind = s0.actor_opt.kind
        self.actor_opt = BatchedOptimizer(
            self.actor_params,
            kind,
            np.repeat([s.actor_opt.lr for s in singles], k),
            lr_scales=s0.actor_opt.lr_scales,
        )
        self.critic_opt = BatchedOptimizer(
            list(self.critic.parameters()), kind, [s.critic_lr for s in singles]
        )
        # the per-run scalars (what _read_scalars reads for one run)
        dev = self.device
        self.actor_lr = np.array([s.actor_lr for s in singles])
        self.critic_lr = np.array([s.critic_lr for s in singles])
        self.actor_grad_clip = self._clip_vector([s.actor_grad_clip for s in singles], k)
        self.critic_grad_clip = self._clip_vector([s.critic_grad_clip for s in singles], 1)
        self.diverged = np.zeros(r, dtype=bool)
        self.diverged_why = [""] * r  # what was not finite first, per diverged run
        self._agent_rows = torch.arange(r, device=dev) * k
        for i in range(r):
            self._put(i)

    def _clip_vector(self, clips: list, k: int) -> torch.Tensor | None:
        """One clip norm per agent (inf: that run does not clip), None when no run clips."""
        if all(c is None for c in clips):
            return None
        v = np.repeat([np.inf if c is None else c for c in clips], k)
        return torch.as_tensor(v, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def candidate_q(self, joint, states, u, cand):
        """The actor loss's candidate scores (CCM): Q (B, N) of the candidate rows, -inf elsewhere,
        through the packed critic, whose rows carry their sample index (to find their run). Not the
        single run's row-invariant evaluation (``agents/argmax.py``), so a run in a pack scores its
        rows in another summation order (float differences ~1e-7), and ``argmax_row_skip`` is not
        available in a pack (:func:`~ccm_madrl.experiment.pack.packable`)."""
        bi, ji = cand.nonzero(as_tuple=True)
        q = torch.full(cand.shape, -torch.inf, device=joint.device)
        own = None if self._steps is None else self._steps.own_part()  # every row's own part, if kept
        if not bi.numel():
            return q
        if own is not None and joint.device.type == "cpu":
            # each run's rows through its own critic slice, in cache-sized chunks gathered from the
            # kept own parts (``rows_q_kept``): the values of ``rows_q``'s one-run-at-a-time path
            q[bi, ji] = self.critic.rows_q_kept(
                joint, bi, own.reshape(-1, own.shape[-1]), bi * cand.shape[1] + ji
            )
            return q
        rows_own = None if own is None else own[bi, ji]
        q[bi, ji] = self.critic.rows_q(joint, bi, states[bi, ji], u[bi, ji], bi, own=rows_own)
        return q

    # ------------------------------------------------------------------ run <-> pack slice
    def _put(self, r: int) -> None:
        """Copy run r's networks and optimiser states (its single-run learner) into slice r."""
        s, k = self.runs[r], self.actors.nets_per_run
        sl = slice(r * k, (r + 1) * k)
        with torch.no_grad():
            for dst, src in ((self.actors, s.actors), (self.actors_target, s.actors_target)):
                for (_, p), q in zip(dst.named_parameters(), src.parameters()):
                    p[sl] = q.to(p.device)
            for dst, src in ((self.critic, s.critic), (self.critic_target, s.critic_target)):
                for p, q in zip(dst.parameters(), src.parameters()):
                    p[r] = q.to(p.device)
        ao = self.actor_opt
        ao.steps[sl] = s.actor_opt.steps
        for mine, theirs in ((ao.m, s.actor_opt.m), (ao.v, s.actor_opt.v)):
            for t, u in zip(mine, theirs):
                t[sl] = u
        co, names = self.critic_opt, _OPT_STATE[self.critic_opt.kind]
        bufs = [co.m, co.v] if co.kind == "adam" else [co.v]
        co.steps[r] = 0
        for i, p in enumerate(s.critic.parameters()):
            st = s.critic_opt.state.get(p, {})
            if "step" in st:
                co.steps[r] = int(st["step"])
            for buf, name in zip(bufs, names):
                buf[i][r] = st[name] if name in st else 0.0

    def _get(self, r: int) -> None:
        """Write slice r back into run r's single-run learner (networks, optimiser states)."""
        s, k = self.runs[r], self.actors.nets_per_run
        sl = slice(r * k, (r + 1) * k)
        with torch.no_grad():
            for src, dst in ((self.actors, s.actors), (self.actors_target, s.actors_target)):
                for p, q in zip(src.parameters(), dst.parameters()):
                    q.copy_(p[sl])
            for src, dst in ((self.critic, s.critic), (self.critic_target, s.critic_target)):
                for p, q in zip(src.parameters(), dst.parameters()):
                    q.copy_(p[r].reshape(q.shape))
        ao = self.actor_opt
        s.actor_opt.steps = ao.steps[sl].copy()
        for mine, theirs in ((ao.m, s.actor_opt.m), (ao.v, s.actor_opt.v)):
            for t, u in zip(mine, theirs):
                u.copy_(t[sl])
        co, names = self.critic_opt, _OPT_STATE[self.critic_opt.kind]
        bufs = [co.m, co.v] if co.kind == "adam" else [co.v]
        step = int(co.steps[r])
        for i, p in enumerate(s.critic.parameters()):
            if step == 0:
                s.critic_opt.state.pop(p, None)
                continue
            st = {"step": torch.tensor(float(step))} if co.kind != "sgd" else {"momentum_buffer": None}
            for buf, name in zip(bufs, names):
                st[name] = buf[i][r].detach().clone().reshape(p.shape)
            s.critic_opt.state[p] = st

    def run_state_dict(self, r: int) -> dict:
        """Run r's learner state in the single-run format (``OffPolicyActorCritic.state_dict``)."""
        self._get(r)
        return self.runs[r].state_dict()

    def load_run_state_dict(self, r: int, sd: dict) -> None:
        self.runs[r].load_state_dict(sd)
        self._put(r)

    # ------------------------------------------------------------------ the loss's per-run pieces
    def _mean(self, x: torch.Tensor, sample: torch.Tensor | None = None) -> torch.Tensor:
        if sample is None:
            return x.reshape(self.n_runs, -1).mean(1)
        run = torch.div(sample, self.critic.per, rounding_mode="floor")
        sums = x.new_zeros(self.n_runs).index_add(0, run, x)
        return sums / torch.bincount(run, minlength=self.n_runs).to(x.dtype)

    @staticmethod
    def _value(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().cpu().numpy().reshape(-1)

    def mark_diverged(self, bad: np.ndarray, why: str) -> None:
        """Mark the runs of the mask ``bad`` diverged, keeping each run's first reason."""
        for i in np.flatnonzero(bad & ~self.diverged):
            self.diverged_why[i] = why
        self.diverged |= bad

    def _check_finite(self, loss_value) -> None:
        self.mark_diverged(~np.isfinite(loss_value), "critic loss not finite")

    def _critic_update(self, critic_loss: torch.Tensor) -> dict:
        params = self.critic_opt.params
        grads = list(torch.autograd.grad(critic_loss.sum(), params))
        stats: dict = {}
        if self.critic_grad_clip is not None:
            stats["critic_grad_norm_preclip"] = clip_per_agent_(grads, self.critic_grad_clip).cpu().numpy()
        self.critic_opt.step(grads)
        return stats

    def _agents(self, agent: int | None):
        return None if agent is None else self._agent_rows + agent

    def reward_signal(self, reward: torch.Tensor) -> torch.Tensor:
        p = reward.shape[0] // self.n_runs
        return torch.cat([s.reward_signal(reward[i * p : (i + 1) * p]) for i, s in enumerate(self.runs)])

    # ------------------------------------------------------------------ acting
    def epsilon(self, episode: int, n_episodes: int) -> np.ndarray:
        return np.array([s.epsilon(episode, n_episodes) for s in self.runs])

    def act(self, states: np.ndarray, explore: bool = False, epsilon=0.0) -> Action:
        """One step of R x E environments (run-major); ``epsilon`` one value per run."""
        u = self.policy(states)
        e = len(states) // self.n_runs
        eps = np.broadcast_to(np.asarray(epsilon, dtype=np.float64), (self.n_runs,))
        if explore:
            for i, s in enumerate(self.runs):
                blk = u[i * e : (i + 1) * e]
                u[i * e : (i + 1) * e] = np.clip(
                    blk + standard_normal(s.rng.noise, blk.shape) * eps[i], -1, 1
                )
        self.critic.per = e
        sel, exceeded = self.select(states, u, explore, np.repeat(eps, e))
        return Action(actor=u, selected=sel, hybrid=hybrid_action(sel, u), exceeded=exceeded)

    def explore_streams(self, n_envs: int):
        e = n_envs // self.n_runs
        runs = [self.runs[i // e].rng for i in range(n_envs)]
        return [g.explore for g in runs], [g.explore_subset for g in runs]

    # ------------------------------------------------------------------ replay and training
    @property
    def replay_size(self) -> list[int]:
        return [len(s.replay) for s in self.runs]

    def observe(self, transitions: dict[str, np.ndarray]) -> None:
        """Each run's episode: arrays (R, T, ...)."""
        r, t = transitions["reward"].shape[:2]
        for i, s in enumerate(self.runs):
            s.reward_stats.update(transitions["reward"][i])
        batch = {k: self._t(v.reshape(r * t, *v.shape[2:])) for k, v in transitions.items()}
        errors = self.transition_errors(batch)
        self.mark_diverged(~np.isfinite(errors.reshape(r, t)).all(axis=1), "priority errors not finite")
        for i, s in enumerate(self.runs):
            if not self.diverged[i]:
                s.replay.add(
                    errors[i * t : (i + 1) * t], **{k: v[i * t : (i + 1) * t] for k, v in batch.items()}
                )

    def train(self) -> list[dict]:
        """One training step of every run: per-run prioritised batches, one packed step, per-run
        priority updates. Returns one statistics dict per run."""
        samples = [s.replay.sample(self.batch_size, s.rng.replay) for s in self.runs]
        batch = {k: torch.cat([b[k] for b, _, _ in samples]) for k in samples[0][0]}
        stats = self.train_step(batch, np.concatenate([w for _, _, w in samples]))
        errors = stats.pop("errors")
        b = self.batch_size
        used = self._value(self._mean(self.reward_signal(batch["reward"]).abs()))
        raw = self._value(self._mean(batch["reward"].abs()))
        out = []
        for i, s in enumerate(self.runs):
            if not self.diverged[i]:
                s.replay.update(samples[i][1], errors[i * b : (i + 1) * b])
            row = {key: float(np.asarray(v).reshape(-1)[i]) for key, v in stats.items()}
            row.update(
                batch_reward_abs=float(raw[i]), batch_reward_used_abs=float(used[i]), beta=s.replay.beta
            )
            out.append(row)
        return out

    def attach_monitor(self, monitor) -> None:
        """Watch the pack's networks: R x N actors and R critics, each reported per agent (split per
        run by :func:`split_monitor_rows`). The critic's hidden-layer statistics of the rows a run's
        loss picks (``critic_rows``) are taken over the padded batch of all runs' rows (padding rows
        of a run with fewer rows count as samples), the one difference from a run alone."""
        monitor.attach("actors", self.actors, optimizer=self.actor_opt, per_agent=True)
        monitor.attach("critic", self.critic, optimizer=self.critic_opt, per_agent=True, actor=False)

    def split_monitor_rows(self, rows: list[dict] | None) -> list[list[dict] | None]:
        """The monitor's rows of the pack as each run's rows alone (agents renumbered, its lr)."""
        if rows is None:
            return [None] * self.n_runs
        k = self.actors.nets_per_run
        out: list[list[dict]] = [[] for _ in range(self.n_runs)]
        for row in rows:
            actor = row["role"] == "actors"
            r, a = divmod(row["agent"], k) if actor else (row["agent"], 0)
            out[r].append({**row, "agent": a, "lr": float((self.actor_lr if actor else self.critic_lr)[r])})
        return out

    def describe(self) -> dict:
        return self.runs[0].describe()


def make_pack(singles: list[OffPolicyActorCritic]):
    """A pack of these single-run learners (same class, architecture and shared options)."""
    cls = type(singles[0])
    if any(type(s) is not cls for s in singles):
        raise ValueError("pack: every run must use the same learner class")
    packed = type(f"Packed{cls.__name__}", (PackMixin, cls), {})
    obj = packed.__new__(packed)
    obj._pack_init(singles)
    return obj
