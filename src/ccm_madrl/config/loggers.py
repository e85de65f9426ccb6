"""The section ``logging`` of a config: the optional experiment trackers (W&B, MLflow; run by
``experiment/loggers.py``)."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_serializer

from .imports import import_object, is_import_path


def _needs(package: str) -> None:
    """The error pydantic reports under the field's name (``logging.wandb: ...``)."""
    if importlib.util.find_spec(package) is None:
        raise ValueError(
            f"needs the {package} package, which is not installed (pip install 'ccm-madrl[loggers]')"
        )


class WandbConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field("ccm_madrl", min_length=1, description="W&B project")
    entity: str | None = Field(None, description="W&B entity (user or team); None: the default")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="None: W&B's own setting (WANDB_MODE); offline: files only, synced later"
    )
    dir: str | None = Field(None, description="where W&B writes its files; None: W&B's default")
    tags: tuple[str, ...] = ()
    histograms: bool = Field(True, description="log the monitor's distributions as wandb.Histogram")


class MLflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str | None = Field(
        None,
        description="e.g. file:///abs/mlruns or http://host:5000; None: MLflow's default (MLFLOW_TRACKING_URI)",
    )
    experiment: str | None = Field(None, description="MLflow experiment; None: the config's name (the sweep)")
    histograms: bool = Field(True, description="log the monitor's distributions as per-quantile metrics")


class LoggingConfig(BaseModel):
    """Optional experiment trackers; not part of the run id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wandb: WandbConfig | None = Field(None, description="Weights & Biases (extra 'loggers')")
    mlflow: MLflowConfig | None = Field(None, description="MLflow (extra 'loggers')")
    custom: tuple[str, ...] = Field(
        (),
        description="loggers named 'module:attribute': each a factory f(config) -> a trainer callback, "
        "importable by every process that trains (docs/architecture.md)",
    )

    @field_validator("wandb", "mlflow")
    @classmethod
    def _installed(cls, v, info):
        if v is not None:
            _needs(info.field_name)  # the package is named like the field
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """``custom`` only where it names a logger: every config without one dumps as before it existed."""
        d = handler(self)
        if isinstance(d, dict) and not d.get("custom"):
            d.pop("custom", None)
        return d

    @field_validator("custom")
    @classmethod
    def _importable(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        """Each a 'module:attribute', imported and checked under ``config.agent.RESOLVE`` (a config
        given to start a run; a stored config names code it does not run)."""
        for path in v:
            if not is_import_path(path):
                raise ValueError(f"{path!r}: expected 'module:attribute' (dotted identifiers)")
            if (info.context or {}).get("import_factories") and not callable(import_object(path, "logger")):
                raise ValueError(f"logger {path!r} is not callable")
        return v


# ------------------------------------------------------------------------------ what is logged
