"""The learner contract: what the trainer, the sweep and the monitor rely on, and nothing else.

A learner acts on E environments at once, stores whole episodes and trains between them:

    act(states, explore, epsilon) -> Action     one step for E environments (greedy unless explore)
    epsilon(episode, n_episodes) -> float       the exploration level of a training episode
    transition_layout() -> {name: shape}        what observe takes per step (the trainer adds time)
    observe(transitions)                        one episode's transitions (leading time axis)
    train() -> dict                             one training step's statistics ({} if it does not train)
    replay_size: int                            transitions stored
    monitorable: bool                           whether attach_monitor(monitor) is meaningful
    state_dict() / load_state_dict(sd)          everything a checkpoint needs for bit-identical resume
    describe() -> dict                          its networks: layer sizes, parameters, activations

:class:`~ccm_madrl.agents.offpolicy.OffPolicyActorCritic` implements it for the MEC actor-critic
learners (CCM-MADRL and MADDPG are siblings over it); :class:`~ccm_madrl.agents.baselines.FixedPolicy`
for the non-learning baselines; ``docs/architecture.md`` shows a toy learner written from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..mec.env import ACTION_FIELDS, STATE_FIELDS


@dataclass
class Action:
    """What one acting step produces for E environments."""

    actor: np.ndarray  # (E, N, 3) actor outputs (after exploration noise when training), float64
    selected: np.ndarray  # (E, N) the master's 0/1 decision
    hybrid: np.ndarray  # (E, N, 3) the environment's action [x, alpha, rho]
    exceeded: np.ndarray  # (E,) proposals exceeded the server's limits


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


@runtime_checkable
class Learner(Protocol):
    monitorable: bool

    @property
    def replay_size(self) -> int: ...

    def epsilon(self, episode: int, n_episodes: int) -> float: ...

    def act(self, states: np.ndarray, explore: bool = False, epsilon: float = 0.0) -> Action: ...

    def transition_layout(self) -> dict[str, tuple[int, ...]]: ...

    def observe(self, transitions: dict[str, np.ndarray]) -> None: ...

    def train(self) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, sd: dict) -> None: ...

    def describe(self) -> dict: ...
