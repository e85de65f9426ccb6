"""CCM-MADRL: N client actors propose, one master critic ranks proposals under server limits.

The loss of the client-master learner over the shared off-policy machinery
(:class:`~ccm_madrl.agents.offpolicy.OffPolicyActorCritic`): the master's selection, the critic's
rows (one per selected agent, a fake agent when nobody was selected), the TD target's maximum over
proposers and the actors' maximum over candidates (``agent.variant.actor_objective``).

Batched throughout: the N actors are one module; the critic's joint first-layer part is computed
once per sample and shared by the rows of that sample; a maximum over proposers is found with one
gradient-free pass over all proposer rows, and only the winning row of each sample is recomputed
with gradient (the gradient of a maximum flows through its argmax only).
"""

from __future__ import annotations

import numpy as np
import torch

from .argmax import BoundedArgmax, full_q, own_inputs
from .base import Action, transition_layout
from .networks import MasterCritic
from .offpolicy import OffPolicyActorCritic
from .parts import ACTOR_CANDIDATES
from .selection import master_select
from .utils import RunningMeanStd, clip_per_agent_, hard_update, hybrid_action

__all__ = [  # the generic pieces stay importable from here
    "Action",
    "CCMLearner",
    "RunningMeanStd",
    "clip_per_agent_",
    "hard_update",
    "hybrid_action",
    "transition_layout",
]


class CCMLearner(OffPolicyActorCritic):
    """The client-master learner. ``rng`` supplies every random draw (see ``RunRNG``)."""

    per_agent_critic = True

    def __init__(self, env_cfg, cfg, rng, device="cpu"):
        super().__init__(env_cfg, cfg, rng, device)
        self.candidates = ACTOR_CANDIDATES[cfg.variant.actor_objective]
        self.argmax_row_skip = cfg.argmax_row_skip  # exact: the same argmax as the full pass
        self._bounded: BoundedArgmax | None = None  # during a training step's actor steps
        self.argmax_rows = [0, 0]  # the actor loss's maximum: candidate rows seen, and rows evaluated

    # ------------------------------------------------------------------ acting: the master
    @torch.no_grad()
    def q_candidates(
        self, states: np.ndarray, u: np.ndarray, candidates: np.ndarray, envs: np.ndarray | None = None
    ) -> np.ndarray:
        """Q of the candidate agents (bool (G, N)) in G environments (``envs``: their indices in the
        batch); -inf elsewhere."""
        s, a = self._t(states), self._t(u)
        env_t = None if envs is None else torch.as_tensor(envs, device=self.device)
        joint = self.critic.joint(s, a, env_t)
        g_idx, j_idx = np.nonzero(candidates)
        q = np.full(candidates.shape, -np.inf)
        if g_idx.size:
            gi, ji = torch.as_tensor(g_idx, device=self.device), torch.as_tensor(j_idx, device=self.device)
            at = None if env_t is None else env_t[gi]
            q[g_idx, j_idx] = self.critic.rows_q(joint, gi, s[gi, ji], a[gi, ji], at).double().cpu().numpy()
        return q

    def select(
        self, states: np.ndarray, u: np.ndarray, explore: bool, epsilon: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The master's decision x (E, N) and whether the limits were exceeded (E,)."""

        def q_fn(envs: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            return self.q_candidates(states[envs], u[envs], candidates, envs)

        coin, subset = self.explore_streams(len(states))
        return master_select(
            u,
            states[..., 3],
            self.limit,
            self.env_cfg.s_e,
            q_fn,
            explore=explore,
            epsilon=epsilon,
            coin=coin,
            subset=subset,
        )

    def explore_streams(self, n_envs: int):
        """The exploration coin's and random subset's streams (a pack: one per environment)."""
        return self.rng.explore, self.rng.explore_subset

    # ------------------------------------------------------------------ the loss
    def train_step(self, batch: dict[str, torch.Tensor], weights) -> dict:
        """The shared training step; with ``argmax_row_skip`` and more than one actor step, the
        actor steps share one :class:`~ccm_madrl.agents.argmax.BoundedArgmax` (the critic is fixed
        while the actors step)."""
        self._bounded = None
        try:
            return super().train_step(batch, weights)
        finally:
            self._bounded = None

    def _actor_step(self, *args, **kwargs) -> float:
        many = len(self.schedule(self.n_agents, self.actors.shared)) > 1
        # row-invariant scoring, which the skipping's exactness rests on, holds at one torch thread
        # (the run's default `threads: 1`); with more, BLAS splits the sums by row count: full pass
        if self._bounded is None and self.argmax_row_skip and many and torch.get_num_threads() == 1:
            self._bounded = BoundedArgmax(self.critic)
        return super()._actor_step(*args, **kwargs)

    def _max_over_proposers(
        self,
        critic: MasterCritic,
        joint: torch.Tensor,
        states: torch.Tensor,
        actions: torch.Tensor,
        prop: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Max over proposing agents of Q (fake agent where nobody proposes), without gradient.
        Returns (q_max (B,), argmax (B,), -1 for the fake agent)."""
        with torch.no_grad():
            b, n = prop.shape
            bi, ji = prop.nonzero(as_tuple=True)
            qmat = torch.full((b, n), -torch.inf, device=joint.device)
            if bi.numel():
                qmat[bi, ji] = critic.proposer_q(joint, states, actions, bi, ji)
            qmax, arg = qmat.max(dim=1)
            none = ~prop.any(dim=1)
            if none.any():
                qmax[none] = critic.head(joint[none], none.nonzero(as_tuple=True)[0])
                arg[none] = -1
        return qmax, arg

    @torch.no_grad()
    def td_target(self, reward: torch.Tensor, next_states: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """y = scale * r + gamma * max_{j proposes} Q'(S', U', s'_j, U'_j) * (1 - done)."""
        u2 = self.actors_target(next_states)
        joint = self.critic_target.joint(next_states, u2)
        q2, _ = self._max_over_proposers(self.critic_target, joint, next_states, u2, u2[..., 0] >= 0)
        return self.reward_signal(reward) + self.gamma * q2 * (1.0 - done)

    def critic_inputs(
        self, states: torch.Tensor, actions: torch.Tensor, selected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer's pre-activation of every (sample, selected agent) row, plus the fake
        agent's row for samples where nobody was selected, and the sample index of each row."""
        joint = self.critic.joint(states, actions)
        sel = selected > 0.5
        bi, ii = sel.nonzero(as_tuple=True)
        none = (~sel.any(dim=1)).nonzero(as_tuple=True)[0]
        rows = torch.cat([joint[bi] + self.critic.own(states[bi, ii], actions[bi, ii], bi), joint[none]])
        return rows, torch.cat([bi, none])

    def critic_rows(
        self, states: torch.Tensor, actions: torch.Tensor, selected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q of the rows of :meth:`critic_inputs`. Returns (Q (R,), sample index of each row (R,))."""
        rows, rb = self.critic_inputs(states, actions, selected)
        return self.critic.head(rows, rb), rb

    def actor_q(
        self,
        joint_states: torch.Tensor,
        states: torch.Tensor,
        u: torch.Tensor,
        selected: torch.Tensor | None,
        joint: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """max_{j: u_bj[0] >= 0} Q(S_b, U_b, s_bj, u_bj) (fake agent if none); with ``actor_objective:
        selected`` the max runs over the agents selected in the stored transition."""
        if joint is None:
            joint = self.critic.joint(joint_states, u)
        cand = self.candidates(u, selected)
        arg = self.candidate_q(joint.detach(), states, u.detach(), cand).max(dim=1).indices
        b = torch.arange(u.shape[0], device=u.device)
        own = self.critic.own(
            states[b, arg], u[b, arg]
        )  # one row per sample: the winner's row only: the max's gradient path
        has = cand.any(dim=1, keepdim=True)
        if bool(has.all()):  # every sample has a candidate (the usual case): the sum, without a where
            return self.critic.head(joint + own)
        return self.critic.head(torch.where(has, joint + own, joint))

    @torch.no_grad()
    def candidate_q(
        self, joint: torch.Tensor, states: torch.Tensor, u: torch.Tensor, cand: torch.Tensor
    ) -> torch.Tensor:
        """Q (B, N) of the candidate rows (bool (B, N)), -inf elsewhere, each row evaluated
        independently of the others (``argmax.rowwise_q``); during the actor steps of a training
        step with ``argmax_row_skip``, -inf also for the rows that provably cannot be the maximum."""
        x_own = own_inputs(self.critic, states, u)
        own = None if self._steps is None else self._steps.own_part()  # every row's own part, if kept
        if self._bounded is None:
            n = int(cand.sum())
            self.argmax_rows[0] += n
            self.argmax_rows[1] += n
            return full_q(self.critic, joint, x_own, cand, own)
        rows, evaluated = self._bounded.rows, self._bounded.evaluated
        q = self._bounded.scores(joint, x_own, cand, own=own)
        self.argmax_rows[0] += self._bounded.rows - rows
        self.argmax_rows[1] += self._bounded.evaluated - evaluated
        return q
