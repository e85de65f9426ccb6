"""The monitor inside Stable-Baselines3: a callback for DDPG, TD3 and SAC.

::

    from ccm_madrl.integrations.sb3 import MonitorCallback
    model = TD3("MlpPolicy", "Pendulum-v1", seed=0)
    model.learn(20_000, callback=MonitorCallback(run_dir="runs/td3"))

It watches ``model.actor`` (role ``actor``) and ``model.critic`` (role ``critic``) through their
optimisers; target networks are not watched. DDPG/TD3 actors end in ``nn.Tanh`` (found
automatically); SAC squashes a Gaussian with a functional ``tanh``, so its pre-activation is the
mean ``actor.mu`` (the deterministic action's). A measurement unit is one rollout and the
``train()`` call after it (``per="rollout"``: one gradient step at the libraries' default
``train_freq=1``, ``gradient_steps=1``) or one environment episode (``per="episode"``); ``interval``
measures every k-th unit. The batch rewards (for ``reward_abs`` / ``effective_lr``) are read from
the replay buffer's samples. With ``early_stop`` the callback returns False — SB3 ends training —
once every actor has been below ``stop_threshold`` for ``early_stop_patience`` measured units.

With ``run_dir`` it writes ``monitor/agents/part-*.parquet``, ``monitor/summary.json`` and
``metrics.parquet`` (one row per finished training episode, ``train_return`` from SB3's ``Monitor``
wrapper when present, and one row per evaluation with ``eval_return``), and (``run_files``, the
default) ``config.yaml`` (a ``kind: cross`` config of the model's run), ``provenance.json`` and
``status.json``, so that ``ccm-madrl report`` and ``ccm-madrl archive`` read it like any other run.
It finishes by itself at the end of ``learn()`` (status ``done``), or when the interpreter exits
before (``interrupted``). Each measured unit's summary goes to SB3's logger
(``self.logger.record("monitor/<name>", value)``: ``actor_grad_norm``, ``actor_sat_exact_frac``,
``grad_ratio``, ...), shown and written with SB3's own output at its ``log_interval``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from stable_baselines3.common.callbacks import BaseCallback

from ..rundir import RunDir
from .session import LibraryRun, MonitorSession, scalars


def separate_actor_lr(model, actor_lr: float) -> None:
    """Give ``model.actor`` its own learning rate: SB3 sets one schedule for every optimiser at each
    ``train()``; this re-sets the actor's after it (the critic keeps the model's ``learning_rate``)."""
    update = model._update_learning_rate

    def _update(optimizers, _update=update):
        _update(optimizers)
        for g in model.actor.optimizer.param_groups:
            g["lr"] = actor_lr

    model._update_learning_rate = _update
    for g in model.actor.optimizer.param_groups:
        g["lr"] = actor_lr


class MonitorCallback(BaseCallback):
    def __init__(
        self,
        run_dir: str | Path | None = None,
        per: str = "rollout",
        interval: int = 1,
        stop_threshold: float = 1e-8,
        early_stop: bool = False,
        early_stop_patience: int = 20,
        eval_env: Any = None,
        eval_every: int = 0,
        eval_episodes: int = 5,
        verbose: int = 0,
        run_files: bool = True,
    ):
        super().__init__(verbose)
        if per not in ("rollout", "episode"):
            raise ValueError(f"per: must be 'rollout' or 'episode' (got {per!r})")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.per = per
        self.session = MonitorSession(run_dir, interval, stop_threshold, early_stop, early_stop_patience)
        self.run = LibraryRun(run_dir, "sb3") if run_dir is not None and run_files else None
        self.stops: dict | None = None
        self.finished = False
        self.eval_env = eval_env
        self.eval_every = int(eval_every)
        self.eval_episodes = int(eval_episodes)
        self.metrics: list[dict] = []
        self.episodes = 0
        self.stopped_early = False
        self._returns: np.ndarray | None = None
        self._lengths: np.ndarray | None = None

    # ------------------------------------------------------------------ setup
    def _init_callback(self) -> None:
        m = self.model
        if not hasattr(m, "actor") or not hasattr(m, "critic"):
            raise TypeError(f"MonitorCallback needs an actor-critic (DDPG, TD3, SAC), got {type(m).__name__}")
        if hasattr(m.actor, "mu") and isinstance(m.actor.mu, torch.nn.Linear):  # SAC: functional tanh
            self.session.attach("actor", m.actor, m.actor.optimizer, output="mu", output_fn=torch.tanh)
        else:
            self.session.attach("actor", m.actor, m.actor.optimizer)
        self.session.attach("critic", m.critic, m.critic.optimizer)
        self._returns = np.zeros(m.n_envs)
        self._lengths = np.zeros(m.n_envs, dtype=int)
        rb = m.replay_buffer
        sample = rb.sample

        def _sample(*args, _sample=sample, **kwargs):
            batch = _sample(*args, **kwargs)
            self.session.note_rewards(batch.rewards)
            return batch

        rb.sample = _sample  # reads the sampled batch, changes nothing
        if self.per == "episode":
            self.session.begin()

    def _on_training_start(self) -> None:
        if self.run is not None:
            self.run.start(self.run_config(int(self.locals.get("total_timesteps", 0))), self._end_at_exit)

    def run_config(self, total_steps: int) -> dict:
        """The ``kind: cross`` config of the model's run (``config.yaml``)."""
        m = self.model
        try:
            env = m.get_env().get_attr("spec")[0].id
        except (AttributeError, IndexError, TypeError):
            env = type(m.get_env()).__name__
        cross = {
            "library": "sb3",
            "algo": type(m).__name__.lower(),
            "env": env,
            "total_steps": max(total_steps, 1),
            "actor_lr": float(m.actor.optimizer.param_groups[0]["lr"]),
            "critic_lr": float(m.critic.optimizer.param_groups[0]["lr"]),
            "learning_starts": int(m.learning_starts),
            "eval_every": self.eval_every if self.eval_env is not None else 0,
            "eval_episodes": self.eval_episodes,
            "monitor_per": self.per,
        }
        mon = self.session.mon
        monitor = {"enabled": True, "interval": mon.interval, "stop_threshold": mon.stop_threshold,
                   "early_stop": self.session.early_stop, "early_stop_patience": self.session.early_stop_patience}  # fmt: skip
        cfg = {"kind": "cross", "name": self.run_dir.name, "cross": cross, "monitor": monitor}
        return cfg if m.seed is None else {**cfg, "seed": int(m.seed)}

    # ------------------------------------------------------------------ units
    def _end_unit(self) -> None:
        """End the open unit; its summary to SB3's logger."""
        rows = self.session.end(timesteps=self.num_timesteps)
        if rows:
            for key, value in scalars(rows).items():
                self.logger.record(key, value)

    def _on_rollout_end(self) -> None:
        if self.per == "rollout":
            self.session.begin()  # the gradient steps of the following train() call

    def _on_rollout_start(self) -> None:
        if self.per == "rollout":
            self._end_unit()

    def _on_step(self) -> bool:
        rewards = np.asarray(self.locals.get("rewards", 0.0), dtype=float).reshape(-1)
        self._returns += rewards
        self._lengths += 1
        for i, done in enumerate(np.asarray(self.locals.get("dones", [])).reshape(-1)):
            if not done:
                continue
            info = self.locals["infos"][i]
            ep = info.get("episode")
            self.metrics.append(
                {
                    "episode": self.episodes,
                    "timesteps": self.num_timesteps,
                    "train_return": float(ep["r"]) if ep else float(self._returns[i]),
                    "train_length": int(ep["l"]) if ep else int(self._lengths[i]),
                    "train_return_scaled": float(self._returns[i]),
                    "is_success": float(info["is_success"]) if "is_success" in info else np.nan,
                    "eval_return": np.nan,
                }
            )
            self.episodes += 1
            self._returns[i] = 0.0
            self._lengths[i] = 0
            if self.per == "episode" and i == 0:
                self._end_unit()
                self.session.begin()
        if self.eval_every and self.eval_env is not None and self.num_timesteps % self.eval_every == 0:
            self.evaluate()
        if self.session.should_stop():
            self.stopped_early = True
            return False
        return True

    def evaluate(self) -> float:
        from stable_baselines3.common.evaluation import evaluate_policy

        rets, _ = evaluate_policy(
            self.model, self.eval_env, self.eval_episodes, deterministic=True, return_episode_rewards=True
        )
        row = {
            "episode": self.episodes,
            "timesteps": self.num_timesteps,
            "eval_return": float(np.mean(rets)),
            "eval_return_std": float(np.std(rets)),
        }
        self.metrics.append(row)
        return row["eval_return"]

    def _on_training_end(self) -> None:
        self.finish()

    def finish(self, state: str = "done") -> dict | None:
        """Write the run directory's tables and its final status (once; called at the end of
        ``learn()``, and with ``interrupted`` at exit if ``learn()`` did not end)."""
        if self.finished:
            return self.stops
        self.finished = True
        rb = getattr(self.model, "replay_buffer", None)
        if rb is not None and "sample" in vars(rb):
            del rb.sample
        self.stops = self.session.finish(timesteps=self.num_timesteps)
        if self.run_dir is not None:
            metrics = self.metrics_frame()
            RunDir(self.run_dir).write_metrics(metrics)
            if self.run is not None:
                self.run.end(metrics, state, stops=self.stops, timesteps=int(self.num_timesteps),
                             early_stopped=self.stopped_early)  # fmt: skip
        return self.stops

    def _end_at_exit(self) -> None:
        if not self.finished:
            self.finish("interrupted")

    def metrics_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics)
