"""Learners: the CCM-MADRL client-master agent and its benchmarks, networks, replay, selection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ccm import CCMLearner
from .config import ALGORITHMS, AgentConfig
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
    raise ValueError(f"agent.algorithm: {algo!r} is not available in this build; allowed: ccm_madrl")


__all__ = ["CCMLearner", "AgentConfig", "ALGORITHMS", "BatchedActor", "MasterCritic", "make_learner"]
