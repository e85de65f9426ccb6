"""The section ``cross`` of a config: one agent of another library on one environment
(``kind: cross``; run by ``experiment/cross.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SB3_ALGOS = ("ddpg", "td3", "sac")
BENCHMARL_ALGOS = ("maddpg", "iddpg", "masac")
# The libraries' default learning rates (SB3: one ``learning_rate`` for actor and critic;
# BenchMARL: ``experiment.lr``) -- the critic's when ``critic_lr`` is left out.
MEC_ONLY = ("env_seed", "rng_mode", "env", "agent", "training")
FINAL_EVALS = 3  # a cross run's final return: the mean of its last 3 evaluations (few, long ones)
DEFAULT_CRITIC_LR = {"ddpg": 1e-3, "td3": 1e-3, "sac": 3e-4, "maddpg": 5e-5, "iddpg": 5e-5, "masac": 5e-5}


class CrossConfig(BaseModel):
    """One agent of another library on one environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    library: Literal["sb3", "benchmarl"] = Field(..., description="sb3 (Stable-Baselines3) or benchmarl")
    algo: Literal["ddpg", "td3", "sac", "maddpg", "iddpg", "masac"] = Field(
        ..., description="sb3: ddpg, td3, sac; benchmarl: maddpg, iddpg, masac"
    )
    env: str = Field(
        ...,
        min_length=1,
        description="sb3: a Gymnasium id (Pendulum-v1, HalfCheetah-v5, FetchReach-v4); benchmarl: vmas/<task>",
    )
    total_steps: int = Field(..., ge=1, description="environment steps (BenchMARL: frames, all agents' envs)")
    actor_lr: float = Field(..., gt=0, description="the actor's learning rate")
    critic_lr: float | None = Field(None, gt=0, description="the critic's; null = the library default")
    reward_scale: float = Field(1.0, gt=0, description="rewards multiplied by this (sb3 only)")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="actor and critic optimiser (sb3 only)")
    action_noise: float = Field(0.1, ge=0, description="sb3 DDPG/TD3: Gaussian exploration noise std")
    learning_starts: int | None = Field(None, ge=0, description="sb3: random steps first; null = default")
    her: bool = Field(False, description="sb3: HerReplayBuffer (goal-conditioned envs, e.g. FetchReach)")
    max_episode_steps: int | None = Field(None, ge=1, description="episode length; null = the env's own")
    eval_every: int = Field(0, ge=0, description="steps between greedy evaluations (0: none)")
    eval_episodes: int = Field(5, ge=1, description="episodes per evaluation")
    monitor_per: Literal["rollout", "episode"] = Field(
        "rollout", description="sb3: measurement unit (rollout = one gradient step at the defaults)"
    )
    frames_per_batch: int = Field(1000, ge=1, description="benchmarl: frames collected per iteration")
    n_envs: int = Field(10, ge=1, description="benchmarl: vectorised environments")
    optimizer_steps: int = Field(100, ge=1, description="benchmarl: gradient steps per iteration")

    @model_validator(mode="after")
    def _consistent(self) -> CrossConfig:
        algos = SB3_ALGOS if self.library == "sb3" else BENCHMARL_ALGOS
        if self.algo not in algos:
            raise ValueError(f"algo: {self.library} supports {', '.join(algos)} (got {self.algo!r})")
        if self.library == "benchmarl":
            if not self.env.startswith("vmas/"):
                raise ValueError(f"env: benchmarl tasks are 'vmas/<task>' (got {self.env!r})")
            if self.reward_scale != 1.0 or self.optimizer != "adam" or self.her:
                raise ValueError("reward_scale, optimizer and her: only for library sb3")
        return self

    def resolved_critic_lr(self) -> float:
        return self.critic_lr if self.critic_lr is not None else DEFAULT_CRITIC_LR[self.algo]
