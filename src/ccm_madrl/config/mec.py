"""Configuration of the MEC task-offloading environment.

Every constant of the published environment is a field here, with the published value as its
default. Units are the published ones (sizes behave like kilobytes: they are multiplied by
8 * 1024 to get "bits"); keep them, the published results depend on them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MODES = ("H2", "TOBM")


class MECConfig(BaseModel):
    """All constants of the MEC environment (validated, immutable)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    n_agents: int = Field(50, ge=1, description="number of client devices (agents)")
    max_steps: int = Field(10, ge=1, description="steps per episode (published: 10 or 100)")
    mode: Literal["H2", "TOBM"] = Field(
        "H2", description="H2: offloaded tasks queue on n_units units; TOBM: one unit per task"
    )
    lambda_e: float = Field(0.5, ge=0, description="energy weight in the cost")
    lambda_t: float = Field(0.5, ge=0, description="time weight in the cost")
    min_size: float = Field(1.0, gt=0)
    max_size: float = Field(50.0, gt=0)
    min_cycle: float = Field(300.0, gt=0)
    max_cycle: float = Field(737.5, gt=0)
    min_ddl: float = Field(0.1, gt=0, description="deadlines are drawn from U(min_ddl, 0.9*max_ddl)")
    max_ddl: float = Field(1.0, gt=0, description="time cap (s); also the punished offload time")
    min_res: float = Field(0.4, gt=0, description="device compute capability (GHz)")
    max_res: float = Field(1.5, gt=0)
    min_power: float = Field(1.0, description="device transmission power (dBm)")
    max_power: float = Field(24.0)
    capability_e: float = Field(4.0, gt=0, description="one edge processing unit (GHz)")
    k_energy_local: float = Field(5 * 1e-27, gt=0)
    min_ene: float = Field(0.5, ge=0, description="battery (MJ)")
    max_ene: float = Field(3.2, gt=0)
    reset_energy_clip: bool = Field(
        True,
        description="reset clips every battery to [min_ene, max_ene] (published at HEAD); false: no clip, "
        "as in the published repository's first commit 44fba1b (a misspelt assignment, S_enery); the "
        "published initial energies are drawn inside the range, so the two differ only for batteries "
        "set outside it",
    )
    harvest_rate: float = Field(0.001, ge=0, description="harvested energy per step")
    harvest_std: float = Field(
        0.0, ge=0, description="std of the harvest draw Normal(harvest_rate, harvest_std)"
    )
    min_gain: float = Field(5.0, description="channel gain (dB)")
    max_gain: float = Field(14.0)
    w_bandwidth: float = Field(40.0, gt=0, description="total bandwidth (MHz)")
    k_channel: int = Field(10, ge=1, description="channels = max offloaded tasks per step (H2)")
    s_e: float = Field(400.0, gt=0, description="server storage: max total offloaded size per step")
    n_units: int = Field(8, ge=1, description="edge processing units (selection limit in TOBM)")

    @model_validator(mode="after")
    def _check_ranges(self) -> MECConfig:
        for lo, hi in (
            ("min_size", "max_size"),
            ("min_cycle", "max_cycle"),
            ("min_res", "max_res"),
            ("min_power", "max_power"),
            ("min_ene", "max_ene"),
            ("min_gain", "max_gain"),
        ):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} ({getattr(self, lo)}) must not exceed {hi} ({getattr(self, hi)})")
        if self.min_ddl >= self.max_ddl - self.max_ddl / 10:
            raise ValueError(
                f"min_ddl ({self.min_ddl}) must be below 0.9 * max_ddl ({0.9 * self.max_ddl}): "
                "deadlines are drawn from U(min_ddl, max_ddl - max_ddl/10)"
            )
        return self

    @property
    def selection_limit(self) -> int:
        """Most tasks the master may accept in one step: channels (H2) or units (TOBM)."""
        return self.k_channel if self.mode == "H2" else self.n_units

    @property
    def ddl_high(self) -> float:
        """Upper bound of the deadline draw, computed exactly as the published code does."""
        return self.max_ddl - self.max_ddl / 10

    @property
    def state_dim(self) -> int:
        return 7

    @property
    def action_dim(self) -> int:
        return 3
