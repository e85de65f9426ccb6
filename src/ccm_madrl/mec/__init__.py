"""The MEC task-offloading environment: config, batched dynamics, RNG modes, standard APIs."""

from .config import MECConfig
from .dynamics import Devices, StepOutcome, step_dynamics
from .env import EpisodeTable, MECEnv, record_episodes
from .rng import RNG_MODES, RunRNG
from .torch_env import TorchMECEnv

__all__ = [
    "MECConfig",
    "MECEnv",
    "TorchMECEnv",
    "Devices",
    "StepOutcome",
    "step_dynamics",
    "EpisodeTable",
    "record_episodes",
    "RunRNG",
    "RNG_MODES",
]
