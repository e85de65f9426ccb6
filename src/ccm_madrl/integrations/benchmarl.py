"""The monitor inside BenchMARL: a callback for MADDPG, IDDPG and MASAC (one role per agent group).

::

    from ccm_madrl.integrations.benchmarl import MonitorCallback
    exp = Experiment(task=..., algorithm_config=MaddpgConfig.get_from_yaml(), ...,
                     callbacks=[MonitorCallback(run_dir="runs/maddpg")])
    exp.run()

For each agent group it watches the loss's policy (role ``actor/<group>``) and value network
(``critic/<group>``) through the group's ``loss_actor`` and ``loss_value`` optimisers. BenchMARL's
MLPs use ``Tanh`` hidden layers and its deterministic policies squash with a functional ``tanh``
(``TanhDelta``), so the actor's pre-activation is the output of the policy MLP's last layer; MASAC's
MLP also outputs the Gaussian's scale, so it is attached without an output activation (gradient
norms, weight changes and stops only). With shared policy parameters (BenchMARL's default) a group's
agents are one network, ``agent = 0``.

A measurement unit is one optimiser step of one group (``per="step"``, BenchMARL's
``on_train_step``) or one iteration: a collected batch and every group's training on it
(``per="iteration"``). ``actor_lr`` gives the actors their own learning rate (BenchMARL has one
``lr``). ``metrics.parquet``: one row per iteration (``train_return``: mean return of the episodes
that ended in the batch, over the group's agents) and one per evaluation (``eval_return``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from benchmarl.experiment.callback import Callback

from ..rundir import RunDir
from .session import MonitorSession


class EarlyStop(Exception):
    """Raised by the callback to end ``Experiment.run`` once every actor froze."""


def _mlp_last_layer(module: torch.nn.Module) -> str:
    linear = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linear:
        raise ValueError("the policy has no nn.Linear layer")
    return linear[-1]


class MonitorCallback(Callback):
    def __init__(
        self,
        run_dir: str | Path | None = None,
        per: str = "step",
        actor_lr: float | None = None,
        interval: int = 1,
        stop_threshold: float = 1e-8,
        early_stop: bool = False,
        early_stop_patience: int = 20,
    ):
        super().__init__()
        if per not in ("step", "iteration"):
            raise ValueError(f"per: must be 'step' or 'iteration' (got {per!r})")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.per = per
        self.actor_lr = actor_lr
        self.session = MonitorSession(run_dir, interval, stop_threshold, early_stop, early_stop_patience)
        self.metrics: list[dict] = []
        self.stopped_early = False
        self.stops: dict | None = None
        self._finished = False

    # ------------------------------------------------------------------ setup
    def on_setup(self) -> None:
        exp = self.experiment
        for group in exp.group_map:
            loss, opts = exp.losses[group], exp.optimizers[group]
            actor = loss.actor_network
            if self.actor_lr is not None:
                for g in opts["loss_actor"].param_groups:
                    g["lr"] = self.actor_lr
            if exp.algorithm_config.__class__.__name__ == "MasacConfig":
                self.session.attach(f"actor/{group}", actor, opts["loss_actor"], output=None, actor=True)
            else:
                last = _mlp_last_layer(actor)
                self.session.attach(
                    f"actor/{group}", actor, opts["loss_actor"], output=last, output_fn=torch.tanh
                )
            critic = getattr(loss, "value_network", None) or loss.qvalue_network
            self.session.attach(f"critic/{group}", critic, opts["loss_value"], output=None, actor=False)

    # ------------------------------------------------------------------ units
    def on_batch_collected(self, batch) -> None:
        exp = self.experiment
        row = {"episode": exp.n_iters_performed, "timesteps": exp.total_frames, "eval_return": np.nan}
        rets = []
        for group in exp.group_map:
            er = batch.get(("next", group, "episode_reward"), None)
            done = batch.get(("next", group, "done"), None)
            if done is None:
                done = batch.get(("next", "done"), None)
            if done is not None and er is not None and done.any():
                while done.dim() < er.dim():  # a global done: one per environment
                    done = done.unsqueeze(-2)
                rets.append(float(er[done.expand_as(er)].float().mean()))
            r = batch.get(("next", group, "reward"))
            row[f"reward_mean/{group}"] = float(r.float().mean())
        row["train_return"] = float(np.mean(rets)) if rets else np.nan
        self.metrics.append(row)
        self.session.begin()

    def on_train_step(self, batch, group: str):
        r = batch.get(("next", group, "reward"), None)
        if r is not None:
            self.session.note_rewards(r)
        if self.per == "step":
            self.session.end(timesteps=self.experiment.total_frames)
            self.session.begin()
        return None

    def on_train_end(self, training_td, group: str) -> None:
        if self.per == "iteration" and group == list(self.experiment.group_map)[-1]:
            self.session.end(timesteps=self.experiment.total_frames)
        if self.session.should_stop():
            self.stopped_early = True
            raise EarlyStop(f"every actor froze (iteration {self.experiment.n_iters_performed})")

    def on_evaluation_end(self, rollouts) -> None:
        exp = self.experiment
        rets = []
        for group in exp.group_map:
            for td in rollouts:
                rets.append(float(td.get(("next", group, "reward")).float().sum(0).mean()))
        self.metrics.append(
            {
                "episode": exp.n_iters_performed,
                "timesteps": exp.total_frames,
                "eval_return": float(np.mean(rets)),
                "eval_return_std": float(np.std(rets)),
            }
        )

    def finish(self) -> dict | None:
        """Write the run directory's tables (idempotent)."""
        if not self._finished:
            self._finished = True
            self.stops = self.session.finish(timesteps=self.experiment.total_frames)
            if self.run_dir is not None:
                RunDir(self.run_dir).write_metrics(self.metrics_frame())
        return self.stops

    def metrics_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics)


def make_experiment(c, seed: int, save_folder: str | Path, callbacks: list):
    """A BenchMARL experiment from a :class:`ccm_madrl.experiment.cross.CrossConfig` (library
    defaults for everything it does not set; no logger; evaluation every ``eval_every`` frames)."""
    from benchmarl.algorithms import IddpgConfig, MaddpgConfig, MasacConfig
    from benchmarl.environments import VmasTask
    from benchmarl.experiment import Experiment, ExperimentConfig
    from benchmarl.models.mlp import MlpConfig

    ec = ExperimentConfig.get_from_yaml()
    ec.max_n_frames = c.total_steps
    ec.off_policy_collected_frames_per_batch = c.frames_per_batch
    ec.off_policy_n_envs_per_worker = c.n_envs
    ec.off_policy_n_optimizer_steps = c.optimizer_steps
    ec.lr = c.resolved_critic_lr()
    ec.loggers = []
    ec.create_json = bool(c.eval_every)
    ec.evaluation = bool(c.eval_every)
    ec.evaluation_interval = c.eval_every or ec.evaluation_interval
    ec.evaluation_episodes = c.eval_episodes
    ec.checkpoint_at_end = False
    ec.checkpoint_interval = 0
    ec.render = False
    Path(save_folder).mkdir(parents=True, exist_ok=True)
    ec.save_folder = str(save_folder)
    name = c.env.split("/", 1)[1].upper()
    try:
        task = VmasTask[name].get_from_yaml()
    except KeyError:
        raise ValueError(f"env: no VMAS task {c.env!r} in BenchMARL") from None
    if c.max_episode_steps:
        task.config["max_steps"] = c.max_episode_steps
    algo = {"maddpg": MaddpgConfig, "iddpg": IddpgConfig, "masac": MasacConfig}[c.algo].get_from_yaml()
    model = MlpConfig.get_from_yaml()
    return Experiment(
        task=task,
        algorithm_config=algo,
        model_config=model,
        critic_model_config=MlpConfig.get_from_yaml(),
        seed=seed,
        config=ec,
        callbacks=callbacks,
    )
