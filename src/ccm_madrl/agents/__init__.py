"""Learners: the CCM-MADRL client-master agent and its benchmarks, networks, replay, selection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .baselines import FixedPolicy
from .benchmarks import MADDPGLearner
from .ccm import CCMLearner
from .config import ALGORITHMS, BASELINES, HEURISTICS, AgentConfig
from .networks import BatchedActor, MasterCritic

if TYPE_CHECKING:
    import torch

    from ..experiment.config import ExperimentConfig
    from ..mec.rng import RunRNG


def make_learner(cfg: ExperimentConfig, rng: RunRNG, device: torch.device | str = "cpu"):
    """The learner named by ``cfg.agent.algorithm``."""
    algo = cfg.agent.algorithm
    if algo == "ccm_madrl":
        return CCMLearner(cfg.env, cfg.agent, rng, device)
    if algo == "maddpg":
        return MADDPGLearner(cfg.env, cfg.agent, rng, device, order="offloadtimefirst", rejected="punish")
    if algo in HEURISTICS:
        return MADDPGLearner(cfg.env, cfg.agent, rng, device, order=algo)
    if algo in BASELINES:
        return FixedPolicy(cfg.env, algo, rng)
    raise ValueError(f"agent.algorithm: unknown algorithm {algo!r}; allowed: {', '.join(ALGORITHMS)}")


__all__ = [
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
