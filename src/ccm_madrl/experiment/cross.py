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

from ..config.cross import BENCHMARL_ALGOS, DEFAULT_CRITIC_LR, FINAL_EVALS, MEC_ONLY, SB3_ALGOS, CrossConfig

__all__ = [
    "BENCHMARL_ALGOS",
    "DEFAULT_CRITIC_LR",
    "FINAL_EVALS",
    "MEC_ONLY",
    "SB3_ALGOS",
    "CrossConfig",
    "train_cross",
]


# ------------------------------------------------------------------------------ the run
def refuse_logging(cfg) -> None:
    """A cross run has no W&B / MLflow logger of the package's (the library's own logger gets the
    monitor's scalars): a ``logging`` section naming one is refused, in one line naming the field."""
    for name in ("wandb", "mlflow"):
        if getattr(cfg.logging, name) is not None:
            raise ValueError(
                f"logging.{name}: a kind: cross run does not log to {name}; remove the logging section "
                "(the library's own logger receives the monitor's scalars)"
            )


def train_cross(cfg, run_dir: str | Path, progress: bool = True, quiet: bool = False):
    """Run one ``kind: cross`` experiment into ``run_dir`` (skipped if already done)."""
    import torch
    import yaml

    from ..integrations.session import library_versions
    from ..provenance import collect
    from ..rundir import RunDir, final_return
    from .summary import RunDirConflict, RunSummary

    refuse_logging(cfg)

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
    prov.update(seed=cfg.seed, config_id=cfg.id(), kind="cross", **library_versions(c.library))
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
        run_files=False,  # this module writes the run's config, provenance and status
    )
    model.learn(c.total_steps, callback=cb)
    if eval_env is not None and cb.num_timesteps % c.eval_every:
        cb.evaluate()  # the final policy
    return cb.metrics_frame(), cb.stops, cb.stopped_early, int(model.num_timesteps)


def _train_benchmarl(cfg, run_dir: Path):
    from ..integrations.benchmarl import EarlyStop, MonitorCallback, make_experiment

    c = cfg.cross
    cb = MonitorCallback(run_dir, actor_lr=c.actor_lr, **_monitor_kwargs(cfg.monitor), run_files=False)
    exp = make_experiment(c, cfg.seed, run_dir / "benchmarl", [cb])
    try:
        exp.run()
    except EarlyStop:  # the callback ended training: every actor froze
        pass
    cb.finish()
    return cb.metrics_frame(), cb.stops, cb.stopped_early, int(exp.total_frames)
