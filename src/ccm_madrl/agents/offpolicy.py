"""An off-policy actor-critic learner for the MEC system: N batched actors, one critic, target
networks, a prioritised replay, the optimisers and checkpoints. What differs between CCM-MADRL and
the MADDPG benchmarks — the critic's inputs, the selection, the TD target's maximum, the value the
actors maximise — is the loss, in the siblings :class:`~ccm_madrl.agents.ccm.CCMLearner` and
:class:`~ccm_madrl.agents.benchmarks.MADDPGLearner`. Update schedules, actor objectives, regularisers
and reward signals are named parts (:mod:`ccm_madrl.agents.parts`).

Read top to bottom: construction (published initialisation order), acting (noise, then the
subclass's selection), replay, the training step (critic, then actors with the updated critic),
monitor wiring and state.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..config.agent import AgentConfig
from ..mec.config import MECConfig
from ..mec.rng import RunRNG, standard_normal
from .base import Action, transition_layout
from .networks import BatchedActor, MasterCritic
from .optim import BatchedOptimizer, make_torch_optimizer
from .parts import (
    ACTOR_REGULARISERS,
    ACTOR_SHARING,
    JOINT_STATES,
    REWARD_SIGNALS,
    UPDATE_SCHEDULES,
    needs_stochastic_actor,
    no_regulariser,
)
from .replay import PrioritizedReplay
from .resets import restore_injection
from .utils import RunningMeanStd, clip_per_agent_, hard_update, hybrid_action


class OffPolicyActorCritic:
    """The shared machinery; a subclass supplies ``per_agent_critic`` (the critic's inputs),
    ``select``, ``td_target``, ``critic_rows`` and ``actor_q``. ``rng`` supplies every random draw."""

    monitorable = True
    per_agent_critic: bool  # the critic's architecture: a per-agent input row (CCM) or joint only

    def __init__(self, env_cfg: MECConfig, cfg: AgentConfig, rng: RunRNG, device: str | torch.device = "cpu"):
        self.env_cfg, self.cfg, self.rng = env_cfg, cfg, rng
        self.device = torch.device(device)
        self.n_agents = n = env_cfg.n_agents
        self.limit = env_cfg.selection_limit
        self.actors, self.critic = self._build_networks()
        self._place_networks()
        self.actor_params = list(self.actors.parameters())
        names = [nm for nm, _ in self.actors.named_parameters()]
        output_block = ("fc3.", "norm.")
        scales = [
            cfg.mitigations.actor_output_lr_scale if nm.startswith(output_block) else 1.0 for nm in names
        ]
        self.actor_opt = BatchedOptimizer(self.actor_params, cfg.optimizer, cfg.actor_lr, lr_scales=scales)
        self.reward_stats = RunningMeanStd()
        self.torch_gen = torch.Generator(device=self.device)
        self.torch_gen.manual_seed(rng.torch_seed + 1)
        self.critic_opt = make_torch_optimizer(cfg.optimizer, self.critic.parameters(), cfg.critic_lr)
        r = cfg.replay
        self.replay = PrioritizedReplay(
            r.capacity,
            transition_layout(n),
            device=self.device,
            alpha=r.per_alpha,
            eps=r.per_eps,
            beta0=r.per_beta0,
            beta_increment=r.per_beta_increment,
        )
        self.schedule = UPDATE_SCHEDULES[cfg.variant.actor_update]
        self.joint_states_field = JOINT_STATES[cfg.variant.actor_joint_states]
        self.regulariser = ACTOR_REGULARISERS[cfg.mitigations.actor_reg]
        self.reward_transform = REWARD_SIGNALS[cfg.mitigations.reward_norm]
        self._steps: ActorSteps | None = None  # during the actor steps of a training step
        # plasticity injection (agents.resets): per injected network, its old head's width and the
        # encoder's rule (checkpointed), and the gradient masks applied before each optimiser step
        self.injection: dict[str, dict] = {}
        self.grad_masks: dict[str, list[torch.Tensor]] = {}
        self._read_scalars(cfg)

    def _read_scalars(self, cfg: AgentConfig) -> None:
        """The scalar hyper-parameters the loss reads (the only place it reads the config; a pack of
        runs replaces the per-run ones by one value per run, :mod:`ccm_madrl.agents.pack`)."""
        mit, ex = cfg.mitigations, cfg.exploration
        self.gamma = cfg.gamma
        self.batch_size = cfg.replay.batch_size
        self.reward_scale = mit.reward_scale
        self.actor_lr, self.critic_lr = cfg.actor_lr, cfg.critic_lr
        self.actor_grad_clip, self.critic_grad_clip = mit.actor_grad_clip, mit.critic_grad_clip
        self.actor_reg_coef = mit.actor_reg_coef
        self.epsilon_schedule = (ex.epsilon_start, ex.epsilon_end, ex.epsilon_decay)
        self.diverged_hint = (
            f"optimizer {cfg.optimizer!r}, critic_lr {cfg.critic_lr:g}, actor_lr {cfg.actor_lr:g}"
        )

    def transition_layout(self) -> dict[str, tuple[int, ...]]:
        """What ``observe`` takes: name -> shape of one step (the trainer adds the time dimension)."""
        return transition_layout(self.n_agents)

    @property
    def replay_size(self) -> int:
        return len(self.replay)

    # ------------------------------------------------------------------ construction
    def _place_networks(self) -> None:
        """Move the networks to the device and make their (frozen) target copies."""
        self.actors.to(self.device)
        self.critic.to(self.device)
        self.actors_target = copy.deepcopy(self.actors)
        self.critic_target = copy.deepcopy(self.critic)
        for p in [*self.actors_target.parameters(), *self.critic_target.parameters()]:
            p.requires_grad_(False)

    def _build_networks(self) -> tuple[BatchedActor, MasterCritic]:
        """Published initialisation: with the torch seed set, actors 0..N-1 (fc1, fc2, fc3 default
        init, then fc3 re-drawn from U(-3e-3, 3e-3)) and then the critic, from one torch stream."""
        arch, mit, n = self.cfg.architecture, self.cfg.mitigations, self.n_agents
        actors = BatchedActor(
            n,
            hidden=arch.actor_hidden,
            activation=arch.activation,
            layernorm=mit.actor_layernorm,
            stochastic=needs_stochastic_actor(mit.actor_reg),
            shared=ACTOR_SHARING[self.cfg.variant.actor_sharing],
        )
        torch.manual_seed(self.rng.torch_seed)
        actors.reset_parameters_reference()
        critic = MasterCritic(
            n,
            hidden=arch.critic_hidden,
            per_agent=self.per_agent_critic,
            output=arch.critic_output,
            output_scale=arch.critic_output_scale,
        )
        if mit.input_norm:
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

    def epsilon(self, episode: int, n_episodes: int) -> float:
        start, end, decay = self.epsilon_schedule
        return end + (start - end) * np.exp(-1.0 * episode / (decay or n_episodes))

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
        """The decision x (E, N) and whether the server's limits were exceeded (E,)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the loss (subclasses)
    def td_target(self, reward: torch.Tensor, next_states: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def critic_rows(
        self, states: torch.Tensor, actions: torch.Tensor, selected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q rows of the batch and the sample index of each row."""
        raise NotImplementedError

    def critic_inputs(
        self, states: torch.Tensor, actions: torch.Tensor, selected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer's pre-activation of the rows :meth:`critic_rows` scores, and each row's sample."""
        raise NotImplementedError

    def actor_q(
        self,
        joint_states: torch.Tensor,
        states: torch.Tensor,
        u: torch.Tensor,
        selected: torch.Tensor | None,
        joint: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The value (B,) the actors maximise for their actions ``u``; ``joint``: the critic's joint
        first-layer part of ``(joint_states, u)`` when the caller has it (:class:`ActorSteps`)."""
        raise NotImplementedError

    def reward_signal(self, reward: torch.Tensor) -> torch.Tensor:
        """The reward as used in the TD target: transformed (``reward_norm``) and scaled (published:
        the raw reward, scale 1)."""
        return self.reward_scale * self.reward_transform(reward, self.reward_stats)

    @torch.no_grad()
    def transition_errors(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Priority errors with the current networks: sum over the rows of (Q - y)^2."""
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
        batch, leaves, weights = self.replay.sample(self.batch_size, self.rng.replay)
        stats = self.train_step(batch, weights)
        self.replay.update(leaves, stats.pop("errors"))
        stats["batch_reward_abs"] = float(batch["reward"].abs().mean())
        stats["batch_reward_used_abs"] = float(self.reward_signal(batch["reward"]).abs().mean())
        stats["beta"] = self.replay.beta
        return stats

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict[str, torch.Tensor], weights: np.ndarray) -> dict:
        """One training step on a replay batch with importance weights: the critic, then the actors
        (their schedule) with the updated critic. Returns statistics and the new priority errors
        (computed with the critic before its step)."""
        w = torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        s, sel = batch["states"], batch["selected"]
        stats = self._critic_step(batch, w)
        js = batch[self.joint_states_field]
        agents = self.schedule(self.n_agents, self.actors.shared)
        self._steps = ActorSteps(self, s, js, agents) if len(agents) > 1 else None
        try:
            actor_losses = [self._actor_step(s, w, i, sel, js) for i in agents]
        finally:
            self._steps = None
        stats["actor_loss"] = self._value(torch.as_tensor(np.mean(actor_losses, axis=0)))
        return stats

    # The reductions of the loss, over the samples of a batch (``sample``: the sample of each row;
    # None: one row per sample). One run: a mean (0-d); a pack: one mean per run, (R,).
    def _mean(self, x: torch.Tensor, sample: torch.Tensor | None = None) -> torch.Tensor:
        return x.mean()

    @staticmethod
    def _value(t: torch.Tensor):
        """A loss statistic as the metrics take it: a float (a pack: one per run)."""
        return float(t.detach())

    def _check_finite(self, loss_value) -> None:
        """One run stops with a clear error when its critic loss is not finite (a pack marks the
        run as diverged instead, and the others go on)."""
        if not np.isfinite(loss_value):
            raise FloatingPointError(
                f"critic loss is {loss_value}: training diverged ({self.diverged_hint}); try smaller "
                "learning rates or agent.mitigations (critic_grad_clip, input_norm, reward_scale)"
            )

    def _critic_update(self, critic_loss: torch.Tensor) -> dict:
        """Backward, clip (``critic_grad_clip``), one optimiser step."""
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        for p, m in zip(self.critic.parameters(), self.grad_masks.get("critic", ())):
            if p.grad is not None:  # an injected critic: only the new head (and the encoder) learn
                p.grad.mul_(m)
        stats: dict = {}
        if self.critic_grad_clip is not None:
            pre = torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.critic_grad_clip)
            stats["critic_grad_norm_preclip"] = float(pre)
        self.critic_opt.step()
        return stats

    def _agents(self, agent: int | None):
        """The optimiser's index of actor ``agent`` (a pack: agent ``agent`` of every run)."""
        return agent

    def _critic_step(self, batch: dict[str, torch.Tensor], w: torch.Tensor) -> dict:
        """The weighted squared TD error over the critic's rows, one optimiser step, the target copy."""
        y = self.td_target(batch["reward"], batch["next_states"], batch["done"])
        q, rb = self.critic_rows(batch["states"], batch["actions"], batch["selected"])
        wr, yr = w[rb], y[rb]
        critic_loss = self._mean((q * wr - yr * wr) ** 2, rb)
        loss_value = self._value(critic_loss)
        self._check_finite(loss_value)
        errors = self._errors(q, yr, rb, y.shape[0])
        stats = self._critic_update(critic_loss)
        hard_update(self.critic_target, self.critic)
        stats.update(
            critic_loss=loss_value,
            q_mean=self._value(self._mean(q.detach(), rb)),
            target_mean=self._value(self._mean(y)),
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
        joint: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """-mean_b w_b * Q_b, Q_b the critic's value of the batch's actions ``u`` (``actor_q``).
        ``joint_states`` replaces the joint state S_b fed to the critic (``actor_joint_states: next``:
        the next joint states); the actions, the own states and own actions stay those of ``states``.
        ``joint``: the critic's joint first-layer part, when the caller has it (``actor_q``)."""
        js = states if joint_states is None else joint_states
        return -self._mean(self.actor_q(js, states, u, selected, joint=joint) * w)

    def _actor_step(
        self,
        states: torch.Tensor,
        w: torch.Tensor,
        agent: int | None,
        selected: torch.Tensor | None = None,
        joint_states: torch.Tensor | None = None,
    ) -> float:
        """One actor step (agent ``agent``'s, or all when None) on a fresh loss plus the regulariser.
        Only the stepping actors' gradients are computed (``gradients_for``): the others' would be
        discarded. Within a training step of several actor steps, the actions and the critic's
        joint part come from :class:`ActorSteps` (the same loss, without what does not change)."""
        steps = self._steps
        with self.actors.gradients_for(self._agents(agent)):
            if steps is not None and steps.by_column and agent is not None:
                u, joint = steps.actions_and_joint(agent)
                extra = 0.0
            else:
                u, extra = self.regulariser(self.actors, states, self.actor_reg_coef, self.torch_gen)
                joint = None if steps is None else steps.joint(u)
            loss = self.actor_objective(states, u, w, selected, joint_states, joint=joint) + extra
            if steps is not None and steps.by_column and agent is not None:
                grads = steps.gradients(loss)
            else:
                grads = list(torch.autograd.grad(loss.sum(), self.actor_params))
        if "actors" in self.grad_masks:  # injected actors: only the new head (and the encoder) learn
            grads = [g * m for g, m in zip(grads, self.grad_masks["actors"])]
        if self.actor_grad_clip is not None:
            clip_per_agent_(grads, self.actor_grad_clip)
        self.actor_opt.step(grads, agent=self._agents(agent))
        hard_update(self.actors_target, self.actors, self._agents(agent))
        if steps is not None and steps.by_column and agent is not None:
            steps.refresh(agent)
        return self._value(loss)

    # ------------------------------------------------------------------ monitor, description, state
    def attach_monitor(self, monitor) -> None:
        """Attach the gradient-flow monitor to this learner's networks (targets are not watched)."""
        monitor.attach("actors", self.actors, optimizer=self.actor_opt, per_agent=True, lr=self.actor_lr)
        monitor.attach("critic", self.critic, optimizer=self.critic_opt, lr=self.critic_lr)

    def describe(self) -> dict:
        """Its networks: per role, the layer sizes, the parameter count (one actor's, and all), the
        activations."""
        from .networks import describe_networks

        return describe_networks(self.actors, self.critic, type(self).__name__)

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
            **({"injection": copy.deepcopy(self.injection)} if self.injection else {}),
        }

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("injection"):  # injected networks: their shapes first (agents.resets)
            restore_injection(self, sd["injection"])
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
            self.torch_gen.set_state(sd["torch_gen"].cpu())  # a checkpoint loaded onto a GPU holds it there


class _LiveColumns(torch.autograd.Function):
    """The kept joint part ``base`` (its value, returned as a view, no copy) with the gradient of
    agent ``agent``'s action columns: the backward of ``base + (part - part.detach())``, ``part =
    critic.joint_actions(live, agent)``, without computing ``part`` nor the two sums: the gradient
    reaching ``live`` is ``critic.joint_actions_grad(g, agent)``, the product autograd computes
    for ``part`` (bit for bit: ``tests/test_actor_steps.py``)."""

    @staticmethod
    def forward(ctx, base, live, critic, agent):  # noqa: D102
        ctx.critic, ctx.agent = critic, agent
        return base.view_as(base)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        return None, ctx.critic.joint_actions_grad(g, ctx.agent), None, None


class ActorSteps:
    """What the actor steps of one training step share: the critic is fixed while the actors step,
    so the state part of its joint first layer, ``W_S S + b`` (``critic.joint_state``), is computed
    once (the joint part of a step is that plus ``W_U U`` of the step's actions, and only the action
    columns carry a gradient). When each step updates one actor (independent networks, no
    regulariser: the published order), only that actor's actions change from step to step: the
    actions of all actors are computed once and each step recomputes its own actor's column alone
    (``BatchedActor.forward_agent``), with gradient, and
    after its update, without; the joint part's gradient path is then that agent's three action
    columns only, and the joint part of the current actions itself is kept, gradient-free, and
    updated by that agent's columns after its update (:meth:`update_joint`); the stepping actor's
    parameters are leaves of their own, their gradients written into buffers kept for the training
    step (:meth:`gradients`); and the critic's own first-layer part of every (sample, agent) row is
    kept for the actor loss's maximum (:meth:`own_part`). With forward hooks on the actors (the
    monitor's), every network's activations are kept as well (``kept``,
    ``BatchedActor.activations``), the stepping actor's slices written into them, and the hooks
    fed with them in the full ``(N, M, features)`` layout (``BatchedActor.forward_agent``): the
    monitor measures what the full forward gave it, without every actor's forward and backward at
    every step.

    Values: the actions are those of the full forward bit for bit (the output activations but
    scaled_sigmoid: ``BatchedActor.forward_agent``); the own parts too; the joint part is the one
    first-layer product split in two (state, actions), the action part then moved by rank-a updates:
    other float32 summation orders (measured in ``benchmarks/README.md``); the gradients of the
    leaves are those of the gathered slices, bit for bit; the gradient of the action columns is a product of that agent's
    columns alone (again another summation order of the same sums)."""

    def __init__(
        self, learner: OffPolicyActorCritic, states: torch.Tensor, joint_states: torch.Tensor, agents
    ):
        self.learner = learner
        self.states = states
        self.by_column = self.steps_by_column(learner, agents)
        actors = learner.actors
        # the stepping actor's parameters as leaves of their own, unless the actors carry hooks that
        # forward_agent cannot feed (then the full forward and gradients)
        self.sliced = self.by_column and actors.hooks_fed()
        # with forward hooks (the monitor's), every network's activations, kept for them
        hooked = self.sliced and any(m._forward_hooks for m in actors.modules())
        self.kept = actors.activations(states) if hooked else None
        with torch.no_grad():
            self.state_part = learner.critic.joint_state(joint_states)
            if not self.by_column:
                self.u = None
            elif self.kept is None:
                self.u = actors(states)
            else:  # the actions of the kept activations (the values of ``actors(states)``)
                self.u = actors._batch_major(self.kept["out_act"], states.shape[:-2]).clone()
            # the joint part of the current actions, kept by rank-a updates (``refresh``)
            self.base = self.state_part + learner.critic.joint_actions(self.u) if self.by_column else None
        self._leaves: dict[str, torch.Tensor] | None = None
        self._agent: int | None = None
        self._grads: list[torch.Tensor] | None = None
        self._grad_nets: torch.Tensor | None = None
        self._own: torch.Tensor | None = None

    @staticmethod
    def steps_by_column(learner: OffPolicyActorCritic, agents) -> bool:
        """Whether each of these actor steps changes one actor's actions only (then they are kept)."""
        return not learner.actors.shared and learner.regulariser is no_regulariser and None not in agents

    def joint(self, u: torch.Tensor) -> torch.Tensor:
        """The critic's joint part of the actions ``u``, with gradient through all action columns."""
        return self.state_part + self.learner.critic.joint_actions(u)

    def actions_and_joint(self, agent: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The actions of every actor (B, N, a), agent ``agent``'s column live (with gradient), and
        the critic's joint part of them (B, H1), whose gradient reaches that column only."""
        critic, actors = self.learner.critic, self.learner.actors
        self._agent = agent
        self._leaves = actors.agent_parameters(agent) if self.sliced else None
        live = actors.forward_agent(self.states, agent, self._leaves, self.kept)
        u = self.u.clone()
        u[:, agent] = live
        return u, _LiveColumns.apply(self.base, live, critic, agent)  # base's value, the columns' gradient

    def gradients(self, loss: torch.Tensor) -> list[torch.Tensor]:
        """The gradients of ``loss`` (summed over runs) for every actor parameter, full stacked shapes,
        exact zeros for the networks that do not step: with the stepping actor's parameters as
        leaves (``sliced``), the gradients of those slices written into buffers kept for the
        training step (the previous step's rows zeroed), instead of a full-size zero gradient
        allocated per parameter and step; the values are the same (zeros and the slices' gradients).
        The returned tensors are valid until the next step's call."""
        params = self.learner.actor_params
        if not self.sliced:
            return list(torch.autograd.grad(loss.sum(), params))
        actors = self.learner.actors
        names = [nm for nm, _ in actors.named_parameters()]
        small = torch.autograd.grad(loss.sum(), [self._leaves[nm] for nm in names])
        nets = actors.agent_nets(self._agent)
        if self._grads is None:
            self._grads = [torch.zeros_like(p) for p in params]
        else:
            for g in self._grads:
                g.index_fill_(0, self._grad_nets, 0.0)
        for g, sg in zip(self._grads, small):
            g.index_copy_(0, nets, sg)
        self._grad_nets = nets
        self._leaves = None
        return list(self._grads)

    @torch.no_grad()
    def own_part(self) -> torch.Tensor | None:
        """The critic's own first-layer part of every row (sample b, agent j), (B, N, H1), for the
        actor loss's maximum over candidate rows (``critic.own_rows``; a critic with a per-agent
        input): computed at the first call, then only the stepping agent's column after its update
        (``refresh``), the only column whose input changes. None when the steps move every action."""
        if self._own is None and self.by_column:
            self._own = self.learner.critic.own_rows(self.states, self.u)
        return self._own

    @torch.no_grad()
    def refresh(self, agent: int) -> None:
        """Agent ``agent``'s actions after its update, the joint part by their change (a rank-a update
        of ``base``, :meth:`update_joint`), and its column of the own parts, if kept."""
        new = self.learner.actors.forward_agent(self.states, agent, None, self.kept)
        self.update_joint(agent, new)
        self.u[:, agent] = new
        if self._own is not None:
            cols = slice(agent, agent + 1)
            self._own[:, cols] = self.learner.critic.own_rows(self.states[:, cols], self.u[:, cols])

    @torch.no_grad()
    def update_joint(self, agent: int, new: torch.Tensor) -> None:
        """``base`` after agent ``agent``'s actions change to ``new`` (B, a): plus the product of that
        agent's action columns with the change, ``W_U[:, cols] (u_new - u_old)``, instead of the whole
        action part again (another float32 summation order: measured in ``benchmarks/README.md``)."""
        self.base.add_(self.learner.critic.joint_actions(new - self.u[:, agent], agent))
