"""The named parts of the learners, each chosen by a config value from a registry. The config's
allowed values ARE these registries' keys (``agents/config.py`` checks a name against the registry
when it validates), so adding a part is one function (or class) and one registry entry. A part defined elsewhere is
named by its import path, ``module:attribute`` (``config/imports.py``): every process that runs the
config (the sweep's parent, a spawned worker, a Ray task, a SLURM job) imports it the same way.

- ``UPDATE_SCHEDULES[agent.variant.actor_update]``: which actor steps one training step takes, as a
  list of agents (None: every actor, or the one shared network, in one step);
- ``ACTOR_SHARING[agent.variant.actor_sharing]``: whether one actor network serves every client;
- ``ACTOR_CANDIDATES[agent.variant.actor_objective]``: the agents over which the actor loss's maximum
  runs;
- ``JOINT_STATES[agent.variant.actor_joint_states]``: the batch field fed to the critic as the joint
  state in the actor loss;
- ``ACTOR_REGULARISERS[agent.mitigations.actor_reg]``: the actions the actor loss uses and the term
  it adds;
- ``REWARD_SIGNALS[agent.mitigations.reward_norm]``: the reward as the TD target uses it (before the
  scale);
- ``ACTIVATIONS[agent.architecture.activation]`` (``agents/networks.py``): the actors' output
  activation;
- ``CRITIC_OUTPUTS[agent.architecture.critic_output]`` (``agents/networks.py``): the critic's output
  as a function of its last layer's value;
- ``OPTIMIZERS[agent.optimizer]`` (``agents/optim.py``): the optimisers;
- ``REJECTED[agent.rejected]``: the decision of a proposer the benchmarks' heuristic selection does
  not accept.

The learners themselves (``agent.algorithm``) are the registry ``agents.LEARNERS``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..config import agent as _config_registries
from ..config.imports import Registry
from .networks import ACTIVATIONS, CRITIC_OUTPUTS
from .optim import OPTIMIZERS

__all__ = [
    "ACTIVATIONS",
    "ACTOR_CANDIDATES",
    "ACTOR_REGULARISERS",
    "ACTOR_SHARING",
    "CRITIC_OUTPUTS",
    "JOINT_STATES",
    "OPTIMIZERS",
    "REJECTED",
    "REWARD_SIGNALS",
    "UPDATE_SCHEDULES",
]


# ------------------------------------------------------------------------------ update schedules
def simultaneous(n_agents: int, shared: bool) -> list[int | None]:
    """One step of every actor on one loss."""
    return [None]


def sequential(n_agents: int, shared: bool) -> list[int | None]:
    """Actor i's step after actor i-1's, each on a fresh loss (published); with one shared network,
    N steps of it (the published repository's first commit)."""
    return [None] * n_agents if shared else list(range(n_agents))


UPDATE_SCHEDULES: dict[str, Callable[[int, bool], list[int | None]]] = Registry(
    {"sequential": sequential, "simultaneous": simultaneous}, "update schedule"
)

# one network per client, or one network for all (the published repository's first commit)
ACTOR_SHARING: dict[str, bool] = Registry({"independent": False, "shared": True}, "actor sharing")


# ------------------------------------------------------------------------------ actor objectives
def proposers(u: torch.Tensor, selected: torch.Tensor | None) -> torch.Tensor:
    """The agents whose (new) action proposes to offload."""
    return u.detach()[..., 0] >= 0


def stored_selection(u: torch.Tensor, selected: torch.Tensor | None) -> torch.Tensor:
    """The agents the master selected in the stored transition (the published repository)."""
    if selected is None:
        raise ValueError("actor_objective 'selected' needs the batch's stored selection")
    return selected > 0.5


ACTOR_CANDIDATES: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = Registry(
    {"proposers": proposers, "selected": stored_selection}, "actor objective"
)

# the batch field the critic sees as the joint state S in the actor loss: the sampled transition's
# current states (the spec) or its next states (the published repository's first commit)
JOINT_STATES: dict[str, str] = Registry({"current": "states", "next": "next_states"}, "joint states")


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


entropy_bonus.stochastic_actor = True  # it needs squashed-Gaussian actors (tanh outputs)


def needs_stochastic_actor(name: str) -> bool:
    """Whether the regulariser ``name`` samples from squashed-Gaussian actors."""
    return getattr(ACTOR_REGULARISERS[name], "stochastic_actor", False)


ACTOR_REGULARISERS: dict[str, Callable] = Registry(
    {"none": no_regulariser, "preact": preactivation_penalty, "entropy": entropy_bonus}, "actor regulariser"
)


# ------------------------------------------------------------------------------ reward signals
def raw_reward(reward: torch.Tensor, stats) -> torch.Tensor:
    return reward


def running_standardised(reward: torch.Tensor, stats) -> torch.Tensor:
    """(r - mean) / sqrt(var + 1e-8) over every reward stored so far (raw once fewer than 2)."""
    if stats.count > 1:
        return (reward - stats.mean) / float(np.sqrt(stats.var + 1e-8))
    return reward


REWARD_SIGNALS: dict[str, Callable] = Registry({"none": raw_reward, "running": running_standardised}, "reward signal")


# ------------------------------------------------------------------------------ heuristic selection
# the decision x of a proposer the benchmarks' heuristic selection does not accept: punished (x = 2,
# its offload time becomes MAX_DDL; published) or computing locally (x = 0)
REJECTED: dict[str, float] = Registry({"punish": 2.0, "local": 0.0}, "rejected decision")


# the config checks a part's name against these registries (config/agent.py: the config layer imports
# no training code, so the registries are handed to it here)
_config_registries.provide(**{name: globals()[name] for name in __all__})
