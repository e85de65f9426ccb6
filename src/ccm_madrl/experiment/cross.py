"""Cross-domain runs (``kind: cross``): a Stable-Baselines3 or BenchMARL agent trained with the
gradient-flow monitor attached, written as a run directory of the same format as ``ccm-madrl train``
(``config.yaml``, ``provenance.json``, ``status.json``, ``metrics.parquet``, ``monitor/``), so the
run store, sweeps and the report work on it.

Needs the ``cross`` extra (``pip install -e ".[cross]"``). A cross run is not checkpointed: an
interrupted one starts again from scratch when its sweep is re-run.
"""

from __future__ import annotations

import shutil
import time
import traceback
from pathlib import Path
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


# ------------------------------------------------------------------------------ the run
def train_cross(cfg, run_dir: str | Path, progress: bool = True, quiet: bool = False):
    """Run one ``kind: cross`` experiment into ``run_dir`` (skipped if already done)."""
    import torch
    import yaml

    from ..provenance import collect
    from ..rundir import RunDir, final_return
    from .runner import RunDirConflict, RunSummary

    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    rd.check_safe()  # a received run directory: no link for a write to follow
    run_dir.mkdir(parents=True, exist_ok=True)
    c: CrossConfig = cfg.cross
    if rd.status_path.exists():
        st = rd.status()
        if st.get("config_id") != cfg.id():
            raise RunDirConflict(f"{run_dir} holds a different experiment; use another run directory")
        if st.get("state") == "done":
            df = rd.metrics()
            return RunSummary(
                run_dir, "done", int(st.get("episodes_done", 0)), final_return(df, FINAL_EVALS), 0.0
            )
    shutil.rmtree(rd.monitor_dir, ignore_errors=True)  # a restarted run starts from scratch
    # the config without the MEC sections, which a cross run does not use (they load as defaults)
    rd.write_config(yaml.safe_dump(cfg.model_dump(mode="json", exclude=set(MEC_ONLY)), sort_keys=False))
    prov = collect(torch.device("cpu"))
    prov.update(seed=cfg.seed, config_id=cfg.id(), kind="cross", **_library_versions(c.library))
    rd.write_provenance(prov)

    live = rd.live_status()

    def status(state: str, **extra) -> None:
        live.set(state, config_id=cfg.id(), total_steps=c.total_steps, **extra)

    status("running", episodes_done=0)
    t0 = time.perf_counter()
    try:
        fn = _train_sb3 if c.library == "sb3" else _train_benchmarl
        with live.beating():
            metrics, stops, early, steps = fn(cfg, run_dir)
    except KeyboardInterrupt:
        status("interrupted", episodes_done=0)
        raise
    except Exception:
        status("failed", episodes_done=0, error=traceback.format_exc())
        raise
    rd.write_metrics(metrics)
    n_ep = int(metrics["train_return"].notna().sum()) if "train_return" in metrics else 0
    wall = time.perf_counter() - t0
    status("done", episodes_done=n_ep, timesteps=steps, early_stopped=early, stops=stops, wall_time_s=wall)
    return RunSummary(run_dir, "done", n_ep, final_return(metrics, FINAL_EVALS), wall)


def _library_versions(library: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    names = {"sb3": ["stable-baselines3", "gymnasium", "mujoco", "gymnasium-robotics"],
             "benchmarl": ["benchmarl", "torchrl", "tensordict", "vmas"]}[library]  # fmt: skip
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return {"libraries": out}


def _monitor_kwargs(mc) -> dict:
    """The callbacks' monitor settings from the run's ``monitor`` section."""
    return {
        "interval": mc.interval,
        "stop_threshold": mc.stop_threshold,
        "early_stop": mc.early_stop,
        "early_stop_patience": mc.early_stop_patience,
    }


def _gym_env(c: CrossConfig, seed: int, train: bool):
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    if c.env.startswith(("Fetch", "Hand")):
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    kw = {"max_episode_steps": c.max_episode_steps} if c.max_episode_steps else {}
    env = Monitor(gym.make(c.env, **kw))  # records the unscaled return
    if train and c.reward_scale != 1.0:
        env = gym.wrappers.TransformReward(env, lambda r, s=c.reward_scale: s * r)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def _train_sb3(cfg, run_dir: Path):
    import numpy as np
    import torch
    from stable_baselines3 import DDPG, SAC, TD3, HerReplayBuffer
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import DummyVecEnv

    from ..integrations.sb3 import MonitorCallback, separate_actor_lr

    c = cfg.cross
    env = DummyVecEnv([lambda: _gym_env(c, cfg.seed, True)])
    eval_env = DummyVecEnv([lambda: _gym_env(c, cfg.seed + 10_000, False)]) if c.eval_every else None
    kw: dict = {"seed": cfg.seed, "device": "cpu", "verbose": 0}
    if c.critic_lr is not None:
        kw["learning_rate"] = c.critic_lr
    if c.learning_starts is not None:
        kw["learning_starts"] = c.learning_starts
    if c.optimizer == "sgd":
        kw["policy_kwargs"] = {"optimizer_class": torch.optim.SGD}
    if c.algo in ("ddpg", "td3") and c.action_noise > 0:
        n = env.action_space.shape[0]
        kw["action_noise"] = NormalActionNoise(np.zeros(n), c.action_noise * np.ones(n))
    policy = "MultiInputPolicy" if c.her else "MlpPolicy"
    if c.her:
        kw["replay_buffer_class"] = HerReplayBuffer
        kw["replay_buffer_kwargs"] = {"n_sampled_goal": 4, "goal_selection_strategy": "future"}
    model = {"ddpg": DDPG, "td3": TD3, "sac": SAC}[c.algo](policy, env, **kw)
    separate_actor_lr(model, c.actor_lr)
    cb = MonitorCallback(
        run_dir,
        per=c.monitor_per,
        **_monitor_kwargs(cfg.monitor),
        eval_env=eval_env,
        eval_every=c.eval_every,
        eval_episodes=c.eval_episodes,
    )
    model.learn(c.total_steps, callback=cb)
    if eval_env is not None and cb.num_timesteps % c.eval_every:
        cb.evaluate()  # the final policy
    return cb.metrics_frame(), cb.stops, cb.stopped_early, int(model.num_timesteps)


def _train_benchmarl(cfg, run_dir: Path):
    from ..integrations.benchmarl import EarlyStop, MonitorCallback, make_experiment

    c = cfg.cross
    cb = MonitorCallback(run_dir, actor_lr=c.actor_lr, **_monitor_kwargs(cfg.monitor))
    exp = make_experiment(c, cfg.seed, run_dir / "benchmarl", [cb])
    try:
        exp.run()
    except EarlyStop:  # the callback ended training: every actor froze
        pass
    cb.finish()
    return cb.metrics_frame(), cb.stops, cb.stopped_early, int(exp.total_frames)
