"""CCM-MADRL: N client actors propose, one master critic ranks proposals under server limits.

Read top to bottom: construction (published initialisation order), acting (noise, the master's
selection), the TD target, the critic step, the actor step (sequential as published, or
simultaneous), and the priority errors of new transitions.

Batched throughout: the N actors are one module; the critic's joint first-layer part is computed
once per sample and shared by the rows of that sample; a maximum over proposers is found with one
gradient-free pass over all proposer rows, and only the winning row of each sample is recomputed
with gradient (the gradient of a maximum flows through its argmax only).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ..mec.config import MECConfig
from ..mec.dynamics import scale_fraction
from ..mec.env import ACTION_FIELDS, STATE_FIELDS
from ..mec.rng import RunRNG, standard_normal
from .config import AgentConfig
from .networks import BatchedActor, MasterCritic
from .optim import BatchedOptimizer, make_torch_optimizer
from .replay import PrioritizedReplay
from .selection import master_select


class RunningMeanStd:
    """Running mean and (population) variance of a stream, updated by batches with Chan et al.'s
    parallel formula: for a batch of n values with mean m_b and sum of squared deviations S_b,
    delta = m_b - mean; mean += delta * n / (count + n); M2 += S_b + delta^2 * count * n / (count + n)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        n = x.size
        if n == 0:
            return
        bm = float(x.mean())
        tot = self.count + n
        delta = bm - self.mean
        self.mean += delta * n / tot
        self.m2 += float(((x - bm) ** 2).sum()) + delta**2 * self.count * n / tot
        self.count = tot

    @property
    def var(self) -> float:
        return self.m2 / self.count if self.count else 1.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, sd: dict) -> None:
        self.count, self.mean, self.m2 = int(sd["count"]), float(sd["mean"]), float(sd["m2"])


def clip_per_agent_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each agent's gradient (dimension 0 of every tensor) to a global L2 norm of ``max_norm``,
    in place, with ``torch.nn.utils.clip_grad_norm_``'s formula. Returns the norms before clipping."""
    sq = sum(g.pow(2).reshape(g.shape[0], -1).sum(1) for g in grads)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(-1, *([1] * (g.dim() - 1))))
    return norms


@dataclass
class Action:
    """What one acting step produces for E environments."""

    actor: np.ndarray  # (E, N, 3) actor outputs (after exploration noise when training), float64
    selected: np.ndarray  # (E, N) the master's 0/1 decision
    hybrid: np.ndarray  # (E, N, 3) the environment's action [x, alpha, rho]
    exceeded: np.ndarray  # (E,) proposals exceeded the server's limits


def hybrid_action(selected: np.ndarray, u: np.ndarray) -> np.ndarray:
    h = np.empty_like(u)
    h[..., 0] = selected
    h[..., 1] = scale_fraction(u[..., 1])
    h[..., 2] = scale_fraction(u[..., 2])
    return h


def hard_update(target: torch.nn.Module, source: torch.nn.Module, agent: int | None = None) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            if agent is None:
                t.copy_(s)
            else:
                t[agent].copy_(s[agent])


def transition_layout(n_agents: int) -> dict[str, tuple[int, ...]]:
    """One stored transition of the MEC learners: name -> shape (without the time dimension)."""
    n, s, a = n_agents, len(STATE_FIELDS), len(ACTION_FIELDS)
    return {
        "states": (n, s),
        "actions": (n, a),
        "selected": (n,),
        "reward": (),
        "next_states": (n, s),
        "done": (),
    }


class CCMLearner:
    """The client-master learner. ``rng`` supplies every random draw (see ``RunRNG``)."""

    per_agent_critic = True
    monitorable = True

    def __init__(self, env_cfg: MECConfig, cfg: AgentConfig, rng: RunRNG, device: str | torch.device = "cpu"):
        self.env_cfg, self.cfg, self.rng = env_cfg, cfg, rng
        self.device = torch.device(device)
        n = env_cfg.n_agents
        self.n_agents = n
        self.limit = env_cfg.selection_limit
        self.actors, self.critic = self._build_networks()
        self.actors.to(self.device)
        self.critic.to(self.device)
        self.actors_target = copy.deepcopy(self.actors)
        self.critic_target = copy.deepcopy(self.critic)
        for p in [*self.actors_target.parameters(), *self.critic_target.parameters()]:
            p.requires_grad_(False)
        self.actor_params = list(self.actors.parameters())
        names = [nm for nm, _ in self.actors.named_parameters()]
        output_block = ("fc3.", "norm.")
        scales = [cfg.actor_output_lr_scale if nm.startswith(output_block) else 1.0 for nm in names]
        self.actor_opt = BatchedOptimizer(self.actor_params, cfg.optimizer, cfg.actor_lr, lr_scales=scales)
        self.reward_stats = RunningMeanStd()
        self.torch_gen = torch.Generator(device=self.device)
        self.torch_gen.manual_seed(rng.torch_seed + 1)
        self.critic_opt = make_torch_optimizer(cfg.optimizer, self.critic.parameters(), cfg.critic_lr)
        self.replay = PrioritizedReplay(
            cfg.replay_capacity,
            transition_layout(n),
            device=self.device,
            alpha=cfg.per_alpha,
            eps=cfg.per_eps,
            beta0=cfg.per_beta0,
            beta_increment=cfg.per_beta_increment,
        )

    def transition_layout(self) -> dict[str, tuple[int, ...]]:
        """What ``observe`` takes: name -> shape of one step (the trainer adds the time dimension)."""
        return transition_layout(self.n_agents)

    @property
    def replay_size(self) -> int:
        return len(self.replay)

    # ------------------------------------------------------------------ construction
    def _build_networks(self) -> tuple[BatchedActor, MasterCritic]:
        """Published initialisation: with the torch seed set, actors 0..N-1 (fc1, fc2, fc3 default
        init, then fc3 re-drawn from U(-3e-3, 3e-3)) and then the critic, from one torch stream."""
        cfg, n = self.cfg, self.n_agents
        actors = BatchedActor(
            n,
            hidden=cfg.actor_hidden,
            activation=cfg.activation,
            layernorm=cfg.actor_layernorm,
            stochastic=cfg.actor_reg == "entropy",
            shared=cfg.actor_sharing == "shared",
        )
        torch.manual_seed(self.rng.torch_seed)
        actors.reset_parameters_reference()
        critic = MasterCritic(n, hidden=cfg.critic_hidden, per_agent=self.per_agent_critic)
        if cfg.input_norm:
            from ..mec.wrappers import observation_bounds

            lo, hi = observation_bounds(self.env_cfg)
            actors.set_input_bounds(lo, hi)
            critic.set_input_bounds(lo, hi)
        return actors, critic

    # ------------------------------------------------------------------ acting
    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def policy(self, states: np.ndarray) -> np.ndarray:
        """Actor outputs for states (E, N, 7), float64 (E, N, 3)."""
        return self.actors(self._t(states)).double().cpu().numpy()

    @torch.no_grad()
    def q_candidates(self, states: np.ndarray, u: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Q of the candidate agents (bool (G, N)) in G environments; -inf elsewhere."""
        s, a = self._t(states), self._t(u)
        joint = self.critic.joint(s, a)
        g_idx, j_idx = np.nonzero(candidates)
        q = np.full(candidates.shape, -np.inf)
        if g_idx.size:
            gi, ji = torch.as_tensor(g_idx, device=self.device), torch.as_tensor(j_idx, device=self.device)
            rows = joint[gi] + self.critic.own(s[gi, ji], a[gi, ji])
            q[g_idx, j_idx] = self.critic.head(rows).double().cpu().numpy()
        return q

    def epsilon(self, episode: int, n_episodes: int) -> float:
        decay = self.cfg.epsilon_decay or n_episodes
        c = self.cfg
        return c.epsilon_end + (c.epsilon_start - c.epsilon_end) * np.exp(-1.0 * episode / decay)

    def act(self, states: np.ndarray, explore: bool = False, epsilon: float = 0.0) -> Action:
        """One acting step for E environments (greedy when ``explore`` is False)."""
        u = self.policy(states)
        if explore:
            u = np.clip(u + standard_normal(self.rng.noise, u.shape) * epsilon, -1, 1)
        sel, exceeded = self.select(states, u, explore, epsilon)
        return Action(actor=u, selected=sel, hybrid=hybrid_action(sel, u), exceeded=exceeded)

    def select(
        self, states: np.ndarray, u: np.ndarray, explore: bool, epsilon: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The master's decision x (E, N) and whether the limits were exceeded (E,)."""

        def q_fn(envs: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            return self.q_candidates(states[envs], u[envs], candidates)

        return master_select(
            u,
            states[..., 3],
            self.limit,
            self.env_cfg.s_e,
            q_fn,
            explore=explore,
            epsilon=epsilon,
            coin=self.rng.explore,
            subset=self.rng.explore_subset,
        )

    # ------------------------------------------------------------------ critic helpers
    def _max_over_proposers(
        self, critic: MasterCritic, joint: torch.Tensor, own: torch.Tensor, prop: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Max over proposing agents of Q (fake agent where nobody proposes), without gradient.
        Returns (q_max (B,), argmax (B,), -1 for the fake agent)."""
        with torch.no_grad():
            b, n = prop.shape
            bi, ji = prop.nonzero(as_tuple=True)
            qmat = torch.full((b, n), -torch.inf, device=joint.device)
            if bi.numel():
                qmat[bi, ji] = critic.head(joint[bi] + own[bi, ji])
            qmax, arg = qmat.max(dim=1)
            none = ~prop.any(dim=1)
            if none.any():
                qmax[none] = critic.head(joint[none])
                arg[none] = -1
        return qmax, arg

    @torch.no_grad()
    def td_target(self, reward: torch.Tensor, next_states: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """y = scale * r + gamma * max_{j proposes} Q'(S', U', s'_j, U'_j) * (1 - done)."""
        u2 = self.actors_target(next_states)
        joint = self.critic_target.joint(next_states, u2)
        own = self.critic_target.own(next_states, u2)
        q2, _ = self._max_over_proposers(self.critic_target, joint, own, u2[..., 0] >= 0)
        return self.reward_signal(reward) + self.cfg.gamma * q2 * (1.0 - done)

    def reward_signal(self, reward: torch.Tensor) -> torch.Tensor:
        """The reward as used in the TD target: scaled, and standardised when ``reward_norm`` is
        ``running`` (published: the raw reward, scale 1)."""
        if self.cfg.reward_norm == "running" and self.reward_stats.count > 1:
            reward = (reward - self.reward_stats.mean) / float(np.sqrt(self.reward_stats.var + 1e-8))
        return self.cfg.reward_scale * reward

    def critic_rows(
        self, states: torch.Tensor, actions: torch.Tensor, selected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q of every (sample, selected agent) pair, plus the fake agent for samples where nobody
        was selected. Returns (Q (R,), sample index of each row (R,))."""
        joint = self.critic.joint(states, actions)
        sel = selected > 0.5
        bi, ii = sel.nonzero(as_tuple=True)
        none = (~sel.any(dim=1)).nonzero(as_tuple=True)[0]
        rows = torch.cat([joint[bi] + self.critic.own(states[bi, ii], actions[bi, ii]), joint[none]])
        return self.critic.head(rows), torch.cat([bi, none])

    @torch.no_grad()
    def transition_errors(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Priority errors with the current networks: sum over selected agents of (Q - y)^2."""
        y = self.td_target(batch["reward"], batch["next_states"], batch["done"])
        q, rb = self.critic_rows(batch["states"], batch["actions"], batch["selected"])
        return self._errors(q, y[rb], rb, y.shape[0])

    @staticmethod
    def _errors(q: torch.Tensor, y_rows: torch.Tensor, rb: torch.Tensor, b: int) -> np.ndarray:
        sq = ((q.detach() - y_rows) ** 2).double()
        return torch.zeros(b, dtype=torch.float64, device=q.device).index_add_(0, rb, sq).cpu().numpy()

    # ------------------------------------------------------------------ replay
    def observe(self, transitions: dict[str, np.ndarray]) -> None:
        """Insert an episode's transitions (arrays with a leading time axis), in order, each with the
        priority of its error under the current networks (published: computed at every step; the
        networks do not change within an episode, so computing them together is the same)."""
        self.reward_stats.update(transitions["reward"])
        batch = {k: self._t(v) for k, v in transitions.items()}
        self.replay.add(self.transition_errors(batch), **batch)

    def train(self) -> dict:
        """Sample a prioritised batch, take one training step, update the batch's priorities."""
        batch, leaves, weights = self.replay.sample(self.cfg.batch_size, self.rng.replay)
        stats = self.train_step(batch, weights)
        self.replay.update(leaves, stats.pop("errors"))
        stats["batch_reward_abs"] = float(batch["reward"].abs().mean())
        stats["batch_reward_used_abs"] = float(self.reward_signal(batch["reward"]).abs().mean())
        stats["beta"] = self.replay.beta
        return stats

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict[str, torch.Tensor], weights: np.ndarray) -> dict:
        """One training step on a replay batch with importance weights. Returns statistics and the
        new priority errors (computed with the critic before its step)."""
        w = torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        s, a = batch["states"], batch["actions"]

        # critic: weighted squared TD error over the selected (or fake) rows
        y = self.td_target(batch["reward"], batch["next_states"], batch["done"])
        q, rb = self.critic_rows(s, a, batch["selected"])
        wr, yr = w[rb], y[rb]
        critic_loss = ((q * wr - yr * wr) ** 2).mean()
        loss_value = float(critic_loss.detach())
        if not np.isfinite(loss_value):
            raise FloatingPointError(
                f"critic loss is {loss_value}: training diverged (optimizer {self.cfg.optimizer!r}, "
                f"critic_lr {self.cfg.critic_lr:g}, actor_lr {self.cfg.actor_lr:g}); try smaller learning "
                "rates, agent.critic_grad_clip, agent.input_norm or agent.reward_scale"
            )
        errors = self._errors(q, yr, rb, y.shape[0])
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        stats: dict = {}
        if self.cfg.critic_grad_clip is not None:
            pre = torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.cfg.critic_grad_clip)
            stats["critic_grad_norm_preclip"] = float(pre)
        self.critic_opt.step()
        hard_update(self.critic_target, self.critic)

        # actors: maximise the weighted best proposer's Q, with the updated critic
        sel = batch["selected"]
        js = batch["next_states"] if self.cfg.actor_joint_states == "next" else s
        if self.cfg.actor_update == "simultaneous":
            actor_losses = [self._actor_step(s, w, None, sel, js)]
        elif self.actors.shared:  # the published repository: N steps of the one network, fresh losses
            actor_losses = [self._actor_step(s, w, None, sel, js) for _ in range(self.n_agents)]
        else:
            actor_losses = [self._actor_step(s, w, i, sel, js) for i in range(self.n_agents)]
        stats.update(
            critic_loss=loss_value,
            actor_loss=float(np.mean(actor_losses)),
            q_mean=float(q.detach().mean()),
            target_mean=float(y.mean()),
            errors=errors,
        )
        return stats

    def actor_objective(
        self,
        states: torch.Tensor,
        u: torch.Tensor,
        w: torch.Tensor,
        selected: torch.Tensor | None = None,
        joint_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """-mean_b w_b * Q_b, Q_b the critic's value of the batch's actions ``u`` (``actor_q``).
        ``joint_states`` replaces the joint state S_b fed to the critic (``actor_joint_states: next``:
        the next joint states); the actions, the own states and own actions stay those of ``states``."""
        return -(
            self.actor_q(states if joint_states is None else joint_states, states, u, selected) * w
        ).mean()

    def actor_q(
        self, joint_states: torch.Tensor, states: torch.Tensor, u: torch.Tensor, selected: torch.Tensor | None
    ) -> torch.Tensor:
        """max_{j: u_bj[0] >= 0} Q(S_b, U_b, s_bj, u_bj) (fake agent if none); with ``actor_objective:
        selected`` the max runs over the agents selected in the stored transition."""
        joint = self.critic.joint(joint_states, u)
        if self.cfg.actor_objective == "selected":
            if selected is None:
                raise ValueError("actor_objective 'selected' needs the batch's stored selection")
            cand = selected > 0.5
        else:
            cand = u.detach()[..., 0] >= 0
        arg = self.candidate_q(joint.detach(), states, u.detach(), cand).max(dim=1).indices
        b = torch.arange(u.shape[0], device=u.device)
        own = self.critic.own(states[b, arg], u[b, arg])  # the winner's row only: the max's gradient path
        return self.critic.head(torch.where(cand.any(dim=1, keepdim=True), joint + own, joint))

    @torch.no_grad()
    def candidate_q(
        self, joint: torch.Tensor, states: torch.Tensor, u: torch.Tensor, cand: torch.Tensor
    ) -> torch.Tensor:
        """Q (B, N) of the candidate rows (bool (B, N)), -inf elsewhere; own parts of those rows only."""
        bi, ji = cand.nonzero(as_tuple=True)
        q = torch.full(cand.shape, -torch.inf, device=joint.device)
        if bi.numel():
            q[bi, ji] = self.critic.head(joint[bi] + self.critic.own(states[bi, ji], u[bi, ji]))
        return q

    def _actor_step(
        self,
        states: torch.Tensor,
        w: torch.Tensor,
        agent: int | None,
        selected: torch.Tensor | None = None,
        joint_states: torch.Tensor | None = None,
    ) -> float:
        cfg = self.cfg
        if cfg.actor_reg == "entropy":  # maximum entropy: minimise -Q + coef * log pi, per agent
            u, log_prob = self.actors.sample(states, self.torch_gen)
            extra = cfg.actor_reg_coef * log_prob.mean(0).sum()
        elif cfg.actor_reg == "preact":  # keep the pre-activations out of the saturated region
            u, z = self.actors.forward_with_preactivation(states)
            extra = cfg.actor_reg_coef * (z**2).mean(dim=(0, 2)).sum()
        else:
            u, extra = self.actors(states), 0.0
        loss = self.actor_objective(states, u, w, selected, joint_states) + extra
        grads = list(torch.autograd.grad(loss, self.actor_params))
        if cfg.actor_grad_clip is not None:
            clip_per_agent_(grads, cfg.actor_grad_clip)
        self.actor_opt.step(grads, agent=agent)
        hard_update(self.actors_target, self.actors, agent)
        return float(loss.detach())

    def attach_monitor(self, monitor) -> None:
        """Attach the gradient-flow monitor to this learner's networks (targets are not watched)."""
        monitor.attach("actors", self.actors, optimizer=self.actor_opt, per_agent=True, lr=self.cfg.actor_lr)
        monitor.attach("critic", self.critic, optimizer=self.critic_opt, lr=self.cfg.critic_lr)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "actors": self.actors.state_dict(),
            "critic": self.critic.state_dict(),
            "actors_target": self.actors_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "replay": self.replay.state_dict(),
            "reward_stats": self.reward_stats.state_dict(),
            "torch_gen": self.torch_gen.get_state(),
        }

    def load_state_dict(self, sd: dict) -> None:
        self.actors.load_state_dict(sd["actors"])
        self.critic.load_state_dict(sd["critic"])
        self.actors_target.load_state_dict(sd["actors_target"])
        self.critic_target.load_state_dict(sd["critic_target"])
        self.actor_opt.load_state_dict(sd["actor_opt"])
        self.critic_opt.load_state_dict(sd["critic_opt"])
        self.replay.load_state_dict(sd["replay"])
        if "reward_stats" in sd:  # absent in checkpoints of 0.1.0 pre-releases
            self.reward_stats.load_state_dict(sd["reward_stats"])
        if "torch_gen" in sd:
            self.torch_gen.set_state(sd["torch_gen"])
