"""The config of a run to start (:func:`build_config`, :func:`load_config`): the models of
:mod:`ccm_madrl.config` validated with the training side loaded, so that every part name is checked
against its registry and an ``agent.algorithm`` of the form 'module:factory' is imported and checked
(``RESOLVE``). Everything else of the config (the models, the YAML loader, :func:`stored_config`)
lives in the config layer and is re-exported here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import agents  # noqa: F401 - importing the learners hands their registries to the config
from ..config.agent import RESOLVE
from ..config.experiment import *  # noqa: F403 - the models and loaders, re-exported
from ..config.experiment import (  # noqa: F401 - _format_validation_error: for the sweep file
    ExperimentConfig,
    _format_validation_error,
    _validate,
    apply_overrides,
    load_yaml,
    override_keys,
)


def build_config(
    data: Mapping[str, Any] | None = None, overrides: Iterable[str] = (), source: str = ""
) -> ExperimentConfig:
    """The config of a run to start, from a mapping the user gave (a config file, a sweep file's
    run) and ``overrides``: validated, and an ``agent.algorithm`` of the form 'module:factory'
    imported and checked (``config.agent.RESOLVE``). A stored config: :func:`stored_config`."""
    overrides = list(overrides)
    data = apply_overrides(dict(data or {}), overrides, source)
    return _validate(data, source, RESOLVE, override_keys(overrides))


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """The config of a run to start from a file the user gave and overrides (:func:`build_config`)."""
    data = load_yaml(path) if path else {}
    return build_config(data, overrides, source=str(path or ""))
