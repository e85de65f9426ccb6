"""The options of every benchmark (validated, immutable; no torch): their defaults are the
benchmark functions' defaults and ``ccm-madrl bench``'s, their descriptions its help texts. A
benchmark whose episodes leave nothing to measure is refused here, naming the minimum."""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from ..config import ExperimentConfig
from ..config.agent import Part

# where a benchmark can train: the run config's devices
DEVICES = get_args(ExperimentConfig.model_fields["device"].annotation)
UPDATES = ("simultaneous", "sequential")  # both update orders of agents.parts.UPDATE_SCHEDULES
Update = Part("UPDATE_SCHEDULES")  # any update order the registry holds
PUBLISHED = Field(
    (),
    description="local checkout(s) of the published repository (TesfayZ/CCM_MADRL_MEC), timed in the "
    "same run; skipped with a message where absent",
)
PUBLISHED_EPISODES = Field(3, ge=1, description="published episodes to time (after a first)")
EVAL_EPISODES = Field(50, ge=1, description="evaluation episodes before every training episode")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvBench(_Options):
    """``bench env``: the batched step of n_envs x n_agents against the per-agent Python loop."""

    n_envs: int = Field(50, ge=1, description="environments stepped as one batch")
    n_agents: int = Field(50, ge=1, description="clients per environment")
    repeat: int = Field(200, ge=1, description="timed steps")


class AgentBench(_Options):
    """``bench agent``: wall time per training episode of real runs (the first two trained
    episodes are not measured)."""

    steps: tuple[PositiveInt, ...] = Field(
        (10, 100), min_length=1, description="steps per episode to measure"
    )
    updates: tuple[Update, ...] = Field(UPDATES, min_length=1, description="update orders")
    episodes: int = Field(
        30, ge=4, description="episodes per run (the first is untrained, the next two warm-up, not measured)"
    )
    eval_episodes: int = EVAL_EPISODES
    monitor: bool = Field(False, description="with the gradient-flow monitor on")
    published: tuple[str, ...] = PUBLISHED
    published_episodes: int = PUBLISHED_EPISODES


class PackBench(_Options):
    """``bench agent --pack R``: ms per run-episode of packs of R runs trained as one program."""

    packs: tuple[PositiveInt, ...] = Field(
        (1, 4, 16), min_length=1, description="runs per pack (e.g. 1 4 16)"
    )
    updates: tuple[Update, ...] = Field(UPDATES, min_length=1, description="update orders")
    monitors: tuple[bool, ...] = Field((False, True), min_length=1, description="monitor off, on")
    episodes: int = Field(
        8,
        ge=5,
        description="episodes per pack (the first is untrained, the next two warm-up; monitor on: every other one measured)",
    )
    eval_episodes: int = EVAL_EPISODES
    steps: int = Field(10, ge=1, description="steps per episode")
    device: str = Field("cpu", description="where the packs train: " + ", ".join(DEVICES))
    published: tuple[str, ...] = PUBLISHED
    published_episodes: int = PUBLISHED_EPISODES


class MonitorBench(_Options):
    """``bench monitor``: the monitor's overhead, measured and unmeasured episodes alternating."""

    updates: tuple[Update, ...] = Field(UPDATES, min_length=1, description="update orders")
    episodes: int = Field(
        40,
        ge=7,
        description="episodes per run (the first untrained, four warm-up, then measured and unmeasured alternate)",
    )
    eval_episodes: int = EVAL_EPISODES


class ArgmaxBench(_Options):
    """``bench argmax``: the actor loss's row skipping over real runs, one per actor learning rate."""

    lrs: tuple[PositiveFloat, ...] = Field(
        (1e-4, 1e-3, 1e-2, 1e-1), min_length=1, description="actor learning rates"
    )
    episodes: int = Field(300, ge=5, description="episodes per learning rate (the first untrained)")
    eval_every: int = Field(25, ge=1, description="evaluate every k-th episode")
    seed: int = Field(0, ge=0, description="the runs' seed")


# benchmark name -> its options; ``pack`` is ``bench agent --pack``
OPTIONS: dict[str, type[_Options]] = {
    "env": EnvBench,
    "agent": AgentBench,
    "monitor": MonitorBench,
    "argmax": ArgmaxBench,
    "pack": PackBench,
}


def defaults(which: str) -> _Options:
    """The default options of the benchmark ``which``."""
    return OPTIONS[which]()
