"""Non-learning baselines, evaluated on the same fixed evaluation episodes as the learners.

Every device uses its full compute and transmit power (alpha = rho = 1) — with the published
constants local energy is negligible next to time, so full compute minimises the local cost.

- ``all_local``: nobody offloads;
- ``random_selection``: everybody proposes; when the server's limits are exceeded, a uniformly random
  subset of ``limit`` agents is drawn and random members removed until the sizes fit (the master's
  exploration rule); the others compute locally;
- ``greedy_deadline``: everybody proposes; when the limits are exceeded, the earliest deadlines are
  accepted first within the limits; the others compute locally.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..mec.config import MECConfig
from ..mec.rng import RunRNG
from .base import Action, transition_layout
from .selection import accept_in_order, explore_select, proposals_exceed


def _random_subset(policy: FixedPolicy, states: np.ndarray, size: np.ndarray) -> np.ndarray:
    """One environment: a uniformly random subset of ``limit`` agents, trimmed until the sizes fit."""
    return explore_select(size, policy.limit, policy.env_cfg.s_e, policy.rng.explore_subset)


def _earliest_deadline(policy: FixedPolicy, states: np.ndarray, size: np.ndarray) -> np.ndarray:
    """One environment: the earliest deadlines first, within the limits."""
    n = states.shape[0]
    order = np.argsort(states[:, 5])[None]
    return accept_in_order(order, np.ones((1, n)), size[None], policy.limit, policy.env_cfg.s_e)[0]


# a baseline's name -> who offloads in an environment whose limits everybody's proposals exceed
# (None: nobody proposes); each name is a learner of agents.LEARNERS
BASELINE_RULES: dict[str, Callable[[FixedPolicy, np.ndarray, np.ndarray], np.ndarray] | None] = {
    "all_local": None,
    "random_selection": _random_subset,
    "greedy_deadline": _earliest_deadline,
}


class FixedPolicy:
    """A policy without learning; it has no replay and nothing to monitor."""

    monitorable = False
    replay = None
    replay_size = 0

    def __init__(self, env_cfg: MECConfig, kind: str, rng: RunRNG):
        if kind not in BASELINE_RULES:
            raise ValueError(f"baseline: unknown baseline {kind!r}; allowed: {', '.join(BASELINE_RULES)}")
        self.env_cfg, self.kind, self.rng = env_cfg, kind, rng
        self.rule = BASELINE_RULES[kind]
        self.limit = env_cfg.selection_limit

    def epsilon(self, episode: int, n_episodes: int) -> float:
        return 0.0

    def transition_layout(self) -> dict[str, tuple[int, ...]]:
        return transition_layout(self.env_cfg.n_agents)

    def act(self, states: np.ndarray, explore: bool = False, epsilon: float = 0.0) -> Action:
        e, n = states.shape[:2]
        x, exceeded = self.select(states, np.ones((e, n, 3)), explore, epsilon)
        hybrid = np.ones((e, n, 3))
        hybrid[..., 0] = x
        return Action(actor=np.zeros((e, n, 3)), selected=x, hybrid=hybrid, exceeded=exceeded)

    def select(
        self, states: np.ndarray, u: np.ndarray, explore: bool, epsilon: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Who offloads (E, N) and whether the server's limits were exceeded (E,)."""
        e, n = states.shape[:2]
        size = states[..., 3]
        x = np.zeros((e, n))
        exceeded = np.zeros(e, dtype=bool)
        if self.rule is not None:
            prop, exceeded = proposals_exceed(np.ones((e, n)), size, self.limit, self.env_cfg.s_e)
            x[:] = 1.0
            for i in np.flatnonzero(exceeded):
                x[i] = self.rule(self, states[i], size[i])
        return x, exceeded

    def observe(self, transitions: dict) -> None:
        return None

    def train(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        return None

    def describe(self) -> dict:
        return {"learner": f"FixedPolicy({self.kind})"}
