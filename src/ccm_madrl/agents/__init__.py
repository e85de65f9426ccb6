"""Learners: the CCM-MADRL client-master agent and its benchmarks, networks, replay, selection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config.agent import AgentConfig, import_factory, provide
from . import parts  # noqa: F401 - hands the part registries to the config
from .base import Action, Learner
from .baselines import BASELINE_RULES, FixedPolicy
from .benchmarks import MADDPGLearner
from .ccm import CCMLearner
from .networks import BatchedActor, MasterCritic
from .selection import HEURISTIC_ORDERS

if TYPE_CHECKING:
    import torch

    from ..experiment.config import ExperimentConfig
    from ..mec.rng import RunRNG


def _ccm(cfg, rng, device):
    return CCMLearner(cfg.env, cfg.agent, rng, device)


def _maddpg(order: str, rejected: str | None = None):
    return lambda cfg, rng, device: MADDPGLearner(
        cfg.env, cfg.agent, rng, device, order=order, rejected=rejected
    )


def _baseline(kind: str):
    return lambda cfg, rng, device: FixedPolicy(cfg.env, kind, rng)


HEURISTICS = tuple(HEURISTIC_ORDERS)
BASELINES = tuple(BASELINE_RULES)

# agent.algorithm -> factory(cfg, rng, device) -> a learner (agents/base.py's contract): the
# registry of the config's allowed algorithms; a config may also name any importable factory as
# 'module:attribute'
LEARNERS = {
    "ccm_madrl": _ccm,
    "maddpg": _maddpg("offloadtimefirst", "punish"),
    **{h: _maddpg(h) for h in HEURISTICS},
    **{b: _baseline(b) for b in BASELINES},
}
ALGORITHMS = tuple(LEARNERS)
provide(LEARNERS=LEARNERS)  # the config's allowed algorithms (config/agent.py)


def make_learner(cfg: ExperimentConfig, rng: RunRNG, device: torch.device | str = "cpu"):
    """The learner named by ``cfg.agent.algorithm``."""
    algo = cfg.agent.algorithm
    factory = import_factory(algo) if ":" in algo else LEARNERS.get(algo)
    if factory is None:
        raise ValueError(f"agent.algorithm: unknown algorithm {algo!r}; allowed: {', '.join(ALGORITHMS)}")
    return factory(cfg, rng, device)


__all__ = [
    "Action",
    "Learner",
    "LEARNERS",
    "CCMLearner",
    "MADDPGLearner",
    "FixedPolicy",
    "AgentConfig",
    "ALGORITHMS",
    "BASELINES",
    "HEURISTICS",
    "BatchedActor",
    "MasterCritic",
    "make_learner",
]
