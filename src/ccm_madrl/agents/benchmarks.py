"""The published study's benchmarks: MADDPG with a centralised critic Q(S, U) on the joint state and
joint actions only (no per-agent input), whose selection is a fixed order instead of the master's Q
ranking. Same networks, replay, exploration noise, training schedule and evaluation as CCM-MADRL.

- ``maddpg`` (vanilla): proposals beyond the limits are punished (x = 2: their offload time becomes
  MAX_DDL); the order in which proposals are accepted is the offload time.
- heuristic-selection MADDPG (``offloadtimefirst``, ``deadline_divide2_size_first``,
  ``mindeadlinefirst``, ``maxdeadlinefirst``, ``minsizefirst``, ``maxsizefirst``): accepted in that
  order under the same channel and storage limits; the rejected proposers are punished as in the
  published code (``agent.rejected: punish``, so ``offloadtimefirst`` equals ``maddpg`` there) or
  compute locally (``agent.rejected: local``).

Deviation from the published benchmark code: it computes offload times during *evaluation* from the
training environment's current task sizes (a stale state); here they come from the evaluated
state itself. There is no exploration coin in the benchmarks' selection (published).
"""

from __future__ import annotations

import numpy as np
import torch

from ..config.agent import AgentConfig
from ..mec.config import MECConfig
from ..mec.rng import RunRNG
from .offpolicy import OffPolicyActorCritic
from .selection import heuristic_select


class MADDPGLearner(OffPolicyActorCritic):
    """The joint-critic loss over the shared off-policy machinery (a sibling of ``CCMLearner``)."""

    per_agent_critic = False

    def __init__(
        self,
        env_cfg: MECConfig,
        cfg: AgentConfig,
        rng: RunRNG,
        device="cpu",
        order: str = "offloadtimefirst",
        rejected: str | None = None,
    ):
        super().__init__(env_cfg, cfg, rng, device)
        self.order = order
        self.rejected = rejected or cfg.rejected

    def select(
        self, states: np.ndarray, u: np.ndarray, explore: bool, epsilon: float
    ) -> tuple[np.ndarray, np.ndarray]:
        return heuristic_select(
            states, u, self.order, self.limit, self.env_cfg.s_e, self.env_cfg, self.rejected
        )

    @torch.no_grad()
    def td_target(self, reward: torch.Tensor, next_states: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """y = scale * r + gamma * Q'(S', U'(S')) * (1 - done)."""
        q2 = self.critic_target(next_states, self.actors_target(next_states))
        return self.reward_signal(reward) + self.gamma * q2 * (1.0 - done)

    def critic_inputs(
        self, states: torch.Tensor, actions: torch.Tensor, selected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One row per sample: the first layer's pre-activation of (S, U), and its sample index."""
        joint = self.critic.joint(states, actions)
        return joint, torch.arange(joint.shape[0], device=joint.device)

    def critic_rows(
        self, states: torch.Tensor, actions: torch.Tensor, selected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One row per sample: Q(S, U)."""
        q = self.critic(states, actions)
        return q, torch.arange(q.shape[0], device=q.device)

    def actor_q(
        self,
        joint_states: torch.Tensor,
        states: torch.Tensor,
        u: torch.Tensor,
        selected: torch.Tensor | None,
        joint: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Q(S_b, U_b(s_b)), S_b the joint states given (current or next)."""
        return self.critic(joint_states, u) if joint is None else self.critic.head(joint)
