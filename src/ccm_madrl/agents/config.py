"""Hyper-parameters of the learners (validated, immutable). Defaults are the published ones."""

from __future__ import annotations

import importlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HEURISTICS = (
    "offloadtimefirst",
    "deadline_divide2_size_first",
    "mindeadlinefirst",
    "maxdeadlinefirst",
    "minsizefirst",
    "maxsizefirst",
)
BASELINES = ("all_local", "random_selection", "greedy_deadline")
ALGORITHMS = ("ccm_madrl", "maddpg", *HEURISTICS, *BASELINES)


def import_factory(path: str):
    """The object named by ``'module:attribute'`` (a learner factory); ValueError naming it if absent."""
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import learner factory {path!r}: {err}") from None


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    algorithm: str = Field(
        "ccm_madrl",
        description="learner: ccm_madrl, a MADDPG benchmark, a non-learning baseline, or 'module:factory', "
        "a learner factory f(cfg, rng, device) importable by every worker (docs/architecture.md)",
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
    actor_sharing: Literal["independent", "shared"] = Field(
        "independent",
        description="independent: one network per client (the golden vectors, the spec); shared: ONE actor "
        "network for all clients, as the published repository's code builds it ([ActorNetwork()] * N); with "
        "actor_update sequential it takes N optimiser steps per training step, each on a fresh loss, with "
        "one optimiser state (the published repository's loop)",
    )
    actor_objective: Literal["proposers", "selected"] = Field(
        "proposers",
        description="CCM-MADRL actor loss: -w * max of Q over the agents whose current action proposes "
        "(proposers: the golden vectors, the spec) or over the agents the master selected in the stored "
        "transition (selected: the published repository's code); the fake agent when there are none",
    )
    actor_joint_states: Literal["current", "next"] = Field(
        "current",
        description="joint state S fed to the critic in the actor loss: the sampled transition's current "
        "joint states (current: the golden vectors, the spec) or its NEXT joint states (next: the published "
        "repository's first commit 44fba1b, in CCM-MADRL and in the MADDPG benchmarks); the actions U, the "
        "own state s_j and own action u_j always come from the current states",
    )
    argmax_row_skip: bool = Field(
        False,
        description="actor loss's maximum over candidate rows in the sequential order: skip the rows whose "
        "Q provably cannot be the maximum (a Lipschitz bound of the change since their last exact value, "
        "with a float safety margin); exact: the same argmax, loss and gradients as the full pass. Off by "
        "default: measured not faster in the published setting late in training (benchmarks/README.md)",
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

    # --- mitigations (all off by default: the published algorithm) ---------------------------
    reward_norm: Literal["none", "running"] = Field(
        "none",
        description="running: rewards in the TD target are standardised by the running mean/std of every "
        "reward observed so far (updated with each episode's rewards, Chan's parallel update)",
    )
    actor_output_lr_scale: float = Field(
        1.0, gt=0, description="layer-wise lr: the actors' output layer learns at this fraction of actor_lr"
    )
    actor_grad_clip: float | None = Field(
        None, gt=0, description="clip each actor's gradient to this global L2 norm"
    )
    critic_grad_clip: float | None = Field(
        None, gt=0, description="clip the critic's gradient to this global L2 norm"
    )
    actor_reg: Literal["none", "preact", "entropy"] = Field(
        "none",
        description="anti-saturation term in the actor loss: preact = coef * mean(z^2) of the output "
        "pre-activations; entropy = squashed-Gaussian actors and coef * log pi (maximum entropy)",
    )
    actor_reg_coef: float = Field(0.0, ge=0, description="coefficient of actor_reg")
    actor_layernorm: bool = Field(
        False, description="per-agent LayerNorm before the actors' output activation"
    )
    input_norm: bool = Field(
        False,
        description="scale every state feature to [0, 1] by the environment's bounds before the actors' "
        "and the critic's first layers (published: raw states, e.g. cycles of 300-737)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AgentConfig:
        if self.actor_reg != "none" and self.actor_reg_coef <= 0:
            raise ValueError(f"actor_reg_coef: must be > 0 when actor_reg is {self.actor_reg!r}")
        if self.actor_reg == "entropy" and self.activation != "tanh":
            raise ValueError("actor_reg 'entropy' (squashed-Gaussian actors) needs activation 'tanh'")
        if self.actor_objective == "selected" and self.algorithm != "ccm_madrl":
            raise ValueError(
                f"actor_objective: 'selected' applies to ccm_madrl only (algorithm is {self.algorithm!r})"
            )
        return self

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, v: str) -> str:
        if v in ALGORITHMS:
            return v
        if ":" not in v:
            raise ValueError(
                f"unknown algorithm {v!r}; allowed: {', '.join(ALGORITHMS)}, or 'module:factory'"
            )
        if not callable(import_factory(v)):
            raise ValueError(f"{v!r} is not callable")
        return v

    @field_validator("actor_hidden", "critic_hidden")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if any(h < 1 for h in v):
            raise ValueError(f"hidden sizes must be >= 1, got {list(v)}")
        return v
