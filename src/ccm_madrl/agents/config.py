"""Hyper-parameters of the learners (validated, immutable). Defaults are the published ones."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ALGORITHMS = (
    "ccm_madrl",
    "maddpg",
    "offloadtimefirst",
    "deadline_divide2_size_first",
    "mindeadlinefirst",
    "maxdeadlinefirst",
    "minsizefirst",
    "maxsizefirst",
    "all_local",
    "random_selection",
    "greedy_deadline",
)


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal[ALGORITHMS] = Field(  # type: ignore[valid-type]
        "ccm_madrl", description="learner: ccm_madrl, a MADDPG benchmark, or a non-learning baseline"
    )
    actor_lr: float = Field(1e-4, gt=0, description="client (actor) learning rate")
    critic_lr: float = Field(1e-3, gt=0, description="master (critic) learning rate")
    gamma: float = Field(0.99, ge=0, le=1)
    batch_size: int = Field(64, ge=1)
    replay_capacity: int = Field(10_000, ge=1)
    per_alpha: float = Field(0.6, ge=0)
    per_eps: float = Field(0.01, gt=0)
    per_beta0: float = Field(0.4, ge=0, le=1)
    per_beta_increment: float = Field(0.001, ge=0)
    epsilon_start: float = Field(1.0, ge=0, le=1)
    epsilon_end: float = Field(0.01, ge=0, le=1)
    epsilon_decay: float | None = Field(
        None, gt=0, description="episodes; None = the run's number of episodes (published)"
    )
    episodes_before_train: int = Field(
        1, ge=0, description="training starts after episode episodes_before_train + 1 (published: 1)"
    )
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam"
    actor_update: Literal["sequential", "simultaneous"] = Field(
        "sequential",
        description="sequential: published, actor i steps with actors 0..i-1 already updated; "
        "simultaneous: one loss, all actors step together (~N times cheaper)",
    )
    actor_hidden: tuple[int, int] = (64, 32)
    critic_hidden: tuple[int, int] = (512, 128)
    activation: Literal["tanh", "softsign", "hardtanh", "scaled_sigmoid"] = "tanh"
    reward_scale: float = Field(1.0, gt=0, description="reward multiplier in the TD target (published: 1)")
    rejected: Literal["punish", "local"] = Field(
        "punish",
        description="heuristic-selection MADDPG: proposers not accepted are punished (x = 2, published) "
        "or compute locally; vanilla maddpg always punishes",
    )

    @field_validator("actor_hidden", "critic_hidden")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if any(h < 1 for h in v):
            raise ValueError(f"hidden sizes must be >= 1, got {list(v)}")
        return v
