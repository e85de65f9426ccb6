"""BenchMARL: the MEC system as a BenchMARL task (:class:`MECTask`), and the monitor inside BenchMARL,
a callback for MADDPG, IDDPG and MASAC (one role per agent group).

The task (``MECTask.OFFLOADING``, YAML ``conf/mec_offloading.yaml`` next to this module) wraps
``ccm_madrl.mec.wrappers.parallel_env(action="box")`` in TorchRL's ``PettingZooWrapper`` with the
joint state (one group ``client`` of N agents, continuous actions ``Box(-1, 1, (3,))``, the master rule
of the config applied inside the step), so that BenchMARL's own algorithms train on it::

    from ccm_madrl.integrations.benchmarl import MECTask
    task = MECTask.OFFLOADING.get_from_yaml()          # or .get_task({"n_agents": 10, ...})
    Experiment(task=task, algorithm_config=MappoConfig.get_from_yaml(), ...).run()

:func:`make_mec_experiment` builds such an experiment with BenchMARL's defaults and a frame budget.

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

The callback finishes by itself when the experiment closes (the end of ``Experiment.run``, also
after an error or an early stop: status ``done``, ``failed`` or ``interrupted``), or when the
interpreter exits before (``interrupted``). With ``run_files`` (the default) the run directory
also gets ``config.yaml`` (a ``kind: cross`` config of the experiment), ``provenance.json`` and
``status.json``, so that ``ccm-madrl report`` and ``ccm-madrl archive`` read it like any other run.
Each measured unit's summary goes to the experiment's logger
(``experiment.logger.log({"monitor/<name>": value}, step=iteration)``: BenchMARL's loggers, e.g.
``csv``, ``tensorboard``, ``wandb``).
"""

from __future__ import annotations

import copy
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from benchmarl.environments.common import Task
from benchmarl.environments.pettingzoo.common import PettingZooClass
from benchmarl.experiment.callback import Callback

from ..rundir import RunDir
from .session import LibraryRun, MonitorSession, scalars


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
        run_files: bool = True,
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
        self.run = LibraryRun(run_dir, "benchmarl") if run_dir is not None and run_files else None

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
        close = exp.close

        def _close(close=close) -> None:  # Experiment.run closes the experiment at its end, and on errors
            close()
            err = sys.exc_info()[1]
            ok = err is None or isinstance(err, EarlyStop)
            self.finish("done" if ok else "interrupted" if isinstance(err, KeyboardInterrupt) else "failed")

        exp.close = _close
        if self.run is not None:
            self.run.start(self.run_config(), self._end_at_exit)

    def run_config(self) -> dict:
        """The ``kind: cross`` config of the experiment (``config.yaml``)."""
        exp = self.experiment
        ec, lr = exp.config, float(exp.config.lr)
        cross = {
            "library": "benchmarl",
            "algo": str(exp.algorithm_name),
            "env": f"{exp.environment_name}/{exp.task_name}",
            "total_steps": int(ec.max_n_frames or 1),
            "actor_lr": float(self.actor_lr) if self.actor_lr is not None else lr,
            "critic_lr": lr,
            "frames_per_batch": int(ec.off_policy_collected_frames_per_batch),
            "n_envs": int(ec.off_policy_n_envs_per_worker),
            "optimizer_steps": int(ec.off_policy_n_optimizer_steps),
        }
        mon = self.session.mon
        monitor = {"enabled": True, "interval": mon.interval, "stop_threshold": mon.stop_threshold,
                   "early_stop": self.session.early_stop, "early_stop_patience": self.session.early_stop_patience}  # fmt: skip
        return {
            "kind": "cross",
            "name": self.run_dir.name,
            "seed": int(exp.seed),
            "cross": cross,
            "monitor": monitor,
        }

    def _end_unit(self) -> None:
        """End the open unit; its summary to the experiment's logger."""
        exp = self.experiment
        rows = self.session.end(timesteps=exp.total_frames)
        if rows and getattr(exp, "logger", None) is not None:
            exp.logger.log(scalars(rows), step=exp.n_iters_performed)

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
            self._end_unit()
            self.session.begin()
        return None

    def on_train_end(self, training_td, group: str) -> None:
        if self.per == "iteration" and group == list(self.experiment.group_map)[-1]:
            self._end_unit()
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

    def finish(self, state: str = "done") -> dict | None:
        """Write the run directory's tables and its final status (once; called when the experiment
        closes, and with ``interrupted`` at exit if it did not)."""
        if not self._finished:
            self._finished = True
            self.stops = self.session.finish(timesteps=self.experiment.total_frames)
            if self.run_dir is not None:
                metrics = self.metrics_frame()
                RunDir(self.run_dir).write_metrics(metrics)
                if self.run is not None:
                    self.run.end(metrics, state, stops=self.stops, timesteps=int(self.experiment.total_frames),
                                 early_stopped=self.stopped_early)  # fmt: skip
        return self.stops

    def _end_at_exit(self) -> None:
        if not self._finished:
            self.finish("interrupted")

    def metrics_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics)


def _experiment_config(max_frames: int, eval_every: int, eval_episodes: int, save_folder):
    """BenchMARL's default experiment config with a frame budget, no logger, no checkpoints, no
    rendering, evaluation every ``eval_every`` frames (0: none)."""
    from benchmarl.experiment import ExperimentConfig

    ec = ExperimentConfig.get_from_yaml()
    ec.max_n_frames = max_frames
    ec.loggers = []
    ec.create_json = bool(eval_every)
    ec.evaluation = bool(eval_every)
    ec.evaluation_interval = eval_every or ec.evaluation_interval
    ec.evaluation_episodes = eval_episodes
    ec.checkpoint_at_end = False
    ec.checkpoint_interval = 0
    ec.render = False
    Path(save_folder).mkdir(parents=True, exist_ok=True)
    ec.save_folder = str(save_folder)
    return ec


def make_experiment(c, seed: int, save_folder: str | Path, callbacks: list):
    """A BenchMARL experiment from a :class:`ccm_madrl.experiment.cross.CrossConfig` (library
    defaults for everything it does not set; no logger; evaluation every ``eval_every`` frames)."""
    from benchmarl.algorithms import IddpgConfig, MaddpgConfig, MasacConfig
    from benchmarl.environments import VmasTask
    from benchmarl.experiment import Experiment
    from benchmarl.models.mlp import MlpConfig

    ec = _experiment_config(c.total_steps, c.eval_every, c.eval_episodes, save_folder)
    ec.off_policy_collected_frames_per_batch = c.frames_per_batch
    ec.off_policy_n_envs_per_worker = c.n_envs
    ec.off_policy_n_optimizer_steps = c.optimizer_steps
    ec.lr = c.resolved_critic_lr()
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


# ---------------------------------------------------------------------------------- the MEC task
TASK_KEYS = ("master_rule", "rng_mode", "env_seed")  # the task's own keys; the rest is MECConfig


def task_env(config: dict, device="cpu", seed: int | None = None):
    """The TorchRL environment of a task config: ``PettingZooWrapper`` over the Box-action
    PettingZoo view, with the joint state as ``"state"``."""
    from torchrl.envs import PettingZooWrapper

    from ..mec.config import MECConfig
    from ..mec.wrappers import parallel_env

    config = dict(config)
    own = {k: config.pop(k) for k in TASK_KEYS if k in config}
    pz = parallel_env(MECConfig(**config), action="box", **own)
    return PettingZooWrapper(pz, return_state=True, device=device, seed=seed, categorical_actions=False)


class MECTaskClass(PettingZooClass):
    """BenchMARL's ``TaskClass`` of the MEC system: continuous actions only, with a state (the joint
    state the master critic uses), episodes of ``max_steps`` steps ended by time limit. The specs are
    the PettingZoo environments' (observation, info, state, action) as BenchMARL's own PettingZoo
    tasks build them."""

    def get_env_fun(self, num_envs: int, continuous_actions: bool, seed: int | None, device):
        if not continuous_actions:
            raise ValueError("mec/offloading: only continuous actions (Box(-1, 1, (3,)) per client)")
        config = copy.deepcopy(self.config)
        return lambda: task_env(config, device=device, seed=seed)

    def supports_continuous_actions(self) -> bool:
        return True

    def supports_discrete_actions(self) -> bool:
        return False

    def has_state(self) -> bool:
        return True

    def has_render(self, env) -> bool:
        return False

    def max_steps(self, env) -> int:
        from ..mec.config import MECConfig

        return MECConfig(**{k: v for k, v in self.config.items() if k not in TASK_KEYS}).max_steps

    @staticmethod
    def env_name() -> str:
        return "mec"


class MECTask(Task):
    """The MEC tasks for BenchMARL (one: ``OFFLOADING``)."""

    OFFLOADING = None

    @staticmethod
    def associated_class():
        return MECTaskClass

    def get_from_yaml(self, path: str | Path | None = None) -> MECTaskClass:
        """The task with the config in ``path`` (default: the packaged ``conf/mec_offloading.yaml``),
        validated: an unknown key or a bad value raises ValueError naming it."""
        if path is None:
            text = resources.files(__package__).joinpath("conf", "mec_offloading.yaml").read_text()
        else:
            text = Path(path).read_text()
        return self.get_task(yaml.safe_load(text) or {})

    def get_task(self, config: dict | None = None) -> MECTaskClass:
        if config is None:
            return self.get_from_yaml()
        return self.associated_class()(name=self.name, config=check_task_config(config))


def check_task_config(config: dict) -> dict:
    """The task config with its defaults filled in; ValueError naming a bad field."""
    from ..mec.config import MECConfig
    from ..mec.rng import check_rng_mode
    from ..mec.wrappers import MASTER_RULES

    full = {"master_rule": "maddpg", "rng_mode": "reference", "env_seed": 37, **config}
    if full["master_rule"] not in MASTER_RULES:
        raise ValueError(
            f"master_rule: unknown rule {full['master_rule']!r}; allowed: {', '.join(MASTER_RULES)}"
        )
    check_rng_mode(full["rng_mode"])
    if not isinstance(full["env_seed"], int) or full["env_seed"] < 0:
        raise ValueError(f"env_seed: must be an integer >= 0, got {full['env_seed']!r}")
    MECConfig(**{k: v for k, v in full.items() if k not in TASK_KEYS})  # names a bad field
    return full


MEC_ALGORITHMS = ("maddpg", "masac", "ippo", "mappo", "iddpg", "isac")


def make_mec_experiment(
    algo: str,
    task: MECTaskClass,
    seed: int,
    save_folder: str | Path,
    max_frames: int,
    frames_per_batch: int,
    n_envs: int = 1,
    optimizer_steps: int | None = None,
    minibatch_iters: int | None = None,
    minibatch_size: int | None = None,
    train_batch_size: int | None = None,
    callbacks: list | None = None,
):
    """A BenchMARL experiment of algorithm ``algo`` (its own YAML config, BenchMARL's MLP for policy
    and critic, BenchMARL's default experiment settings) on ``task``, with a budget of ``max_frames``
    environment steps collected ``frames_per_batch`` at a time from ``n_envs`` environments; the
    on-policy (``minibatch_*``) and off-policy (``optimizer_steps``, ``train_batch_size``) update
    sizes left at None keep BenchMARL's defaults. No logger, no evaluation inside BenchMARL
    (:func:`evaluate_policy` evaluates on the package's fixed episodes)."""
    from benchmarl.algorithms import (
        IddpgConfig,
        IppoConfig,
        IsacConfig,
        MaddpgConfig,
        MappoConfig,
        MasacConfig,
    )
    from benchmarl.experiment import Experiment
    from benchmarl.models.mlp import MlpConfig

    configs = {
        "maddpg": MaddpgConfig,
        "masac": MasacConfig,
        "ippo": IppoConfig,
        "mappo": MappoConfig,
        "iddpg": IddpgConfig,
        "isac": IsacConfig,
    }
    if algo not in configs:
        raise ValueError(f"algo: unknown BenchMARL algorithm {algo!r}; allowed: {', '.join(configs)}")
    ec = _experiment_config(max_frames, 0, 0, save_folder)
    ec.on_policy_collected_frames_per_batch = ec.off_policy_collected_frames_per_batch = frames_per_batch
    ec.on_policy_n_envs_per_worker = ec.off_policy_n_envs_per_worker = n_envs
    for field, value in (
        ("off_policy_n_optimizer_steps", optimizer_steps),
        ("off_policy_train_batch_size", train_batch_size),
        ("on_policy_n_minibatch_iters", minibatch_iters),
        ("on_policy_minibatch_size", minibatch_size),
    ):
        if value is not None:
            setattr(ec, field, value)
    return Experiment(
        task=task,
        algorithm_config=configs[algo].get_from_yaml(),
        model_config=MlpConfig.get_from_yaml(),
        critic_model_config=MlpConfig.get_from_yaml(),
        seed=seed,
        config=ec,
        callbacks=callbacks or [],
    )


def policy_fn(experiment, group: str = "client"):
    """The experiment's policy as ``u = f(states)``: (E, N, 7) float64 -> actor outputs (E, N, 3) in
    [-1, 1], deterministic (BenchMARL's evaluation mode)."""
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    policy = experiment.policy

    @torch.no_grad()
    def act(states: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(states, dtype=torch.float32)
        td = TensorDict({group: TensorDict({"observation": obs}, batch_size=obs.shape[:2])}, obs.shape[:1])
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            out = policy(td)
        return out.get((group, "action")).double().numpy()

    return act
