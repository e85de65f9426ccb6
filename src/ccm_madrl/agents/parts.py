"""The small named parts of the actor-critic learners, each chosen by a config value from a registry:
adding one is one function and one registry entry (``agents/config.py`` takes its allowed values from
these registries).

- ``UPDATE_SCHEDULES[agent.actor_update]``: which actor steps one training step takes, as a list of
  agents (None: all agents in one step of the batched optimiser);
- ``ACTOR_CANDIDATES[agent.actor_objective]``: the agents over which the actor loss's maximum runs;
- ``ACTOR_REGULARISERS[agent.actor_reg]``: the actions the actor loss uses and the term it adds;
- ``REWARD_SIGNALS[agent.reward_norm]``: the reward as the TD target uses it (before the scale).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


# ------------------------------------------------------------------------------ update schedules
def simultaneous(n_agents: int, shared: bool) -> list[int | None]:
    """One step of every actor on one loss."""
    return [None]


def sequential(n_agents: int, shared: bool) -> list[int | None]:
    """Actor i's step after actor i-1's, each on a fresh loss (published); with one shared network,
    N steps of it (the published repository's first commit)."""
    return [None] * n_agents if shared else list(range(n_agents))


UPDATE_SCHEDULES: dict[str, Callable[[int, bool], list[int | None]]] = {
    "sequential": sequential,
    "simultaneous": simultaneous,
}


# ------------------------------------------------------------------------------ actor objectives
def proposers(u: torch.Tensor, selected: torch.Tensor | None) -> torch.Tensor:
    """The agents whose (new) action proposes to offload."""
    return u.detach()[..., 0] >= 0


def stored_selection(u: torch.Tensor, selected: torch.Tensor | None) -> torch.Tensor:
    """The agents the master selected in the stored transition (the published repository)."""
    if selected is None:
        raise ValueError("actor_objective 'selected' needs the batch's stored selection")
    return selected > 0.5


ACTOR_CANDIDATES: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "proposers": proposers,
    "selected": stored_selection,
}


# ------------------------------------------------------------------------------ actor regularisers
def no_regulariser(actors, states: torch.Tensor, coef: float, gen: torch.Generator):
    return actors(states), 0.0


def preactivation_penalty(actors, states: torch.Tensor, coef: float, gen: torch.Generator):
    """Keep the pre-activations out of the saturated region: coef * sum_i mean z_i^2."""
    u, z = actors.forward_with_preactivation(states)
    return u, coef * (z**2).mean(dim=(0, 2)).sum()


def entropy_bonus(actors, states: torch.Tensor, coef: float, gen: torch.Generator):
    """Maximum entropy: reparameterised squashed-Gaussian actions, + coef * sum_i mean log pi_i."""
    u, log_prob = actors.sample(states, gen)
    return u, coef * log_prob.mean(0).sum()


ACTOR_REGULARISERS: dict[str, Callable] = {
    "none": no_regulariser,
    "preact": preactivation_penalty,
    "entropy": entropy_bonus,
}


# ------------------------------------------------------------------------------ reward signals
def raw_reward(reward: torch.Tensor, stats) -> torch.Tensor:
    return reward


def running_standardised(reward: torch.Tensor, stats) -> torch.Tensor:
    """(r - mean) / sqrt(var + 1e-8) over every reward stored so far (raw once fewer than 2)."""
    if stats.count > 1:
        return (reward - stats.mean) / float(np.sqrt(stats.var + 1e-8))
    return reward


REWARD_SIGNALS: dict[str, Callable] = {"none": raw_reward, "running": running_standardised}
