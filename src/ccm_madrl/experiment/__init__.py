"""Experiments: config schema, the training loop, sweeps (local / Ray), the run store."""

from .callbacks import Callback, default_callbacks
from .config import ConfigError, ExperimentConfig, build_config, load_config
from .runner import RunSummary, Trainer, train

__all__ = [
    "Callback",
    "default_callbacks",
    "ConfigError",
    "ExperimentConfig",
    "build_config",
    "load_config",
    "RunSummary",
    "Trainer",
    "train",
]
