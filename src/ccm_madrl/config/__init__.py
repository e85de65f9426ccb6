"""The config layer: the validated, immutable config models (pydantic only; no torch, nothing that
trains). Each section's options are declared here: ``experiment.py`` (the run), ``agent.py`` (the
learner's sub-configs), ``mec.py`` (the MEC system), ``cross.py`` and ``loggers.py`` (another
library's agent, the experiment trackers). The training side imports these; the run store and the
report read stored configs with them (:func:`stored_config`). A config to start a run is built by
``ccm_madrl.experiment.config.build_config``."""

from .agent import AgentConfig
from .cross import CrossConfig
from .experiment import ConfigError, ExperimentConfig, load_yaml, parse_yaml, stored_config
from .loggers import LoggingConfig
from .mec import MECConfig

__all__ = [
    "AgentConfig",
    "ConfigError",
    "CrossConfig",
    "ExperimentConfig",
    "LoggingConfig",
    "MECConfig",
    "load_yaml",
    "parse_yaml",
    "stored_config",
]
