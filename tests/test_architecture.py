"""The worked examples of docs/architecture.md: a learner written from scratch trains through the
trainer and a sweep with no change to either; a callback; a mitigation (a regulariser) added by one
function and one registry entry; the registries are the config's allowed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ccm_madrl.agents import Action, Learner, make_learner
from ccm_madrl.agents.base import transition_layout
from ccm_madrl.agents.config import MitigationsConfig, VariantConfig, part_registry
from ccm_madrl.agents.parts import ACTOR_CANDIDATES, ACTOR_REGULARISERS, REWARD_SIGNALS, UPDATE_SCHEDULES
from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.experiment.callbacks import Callback, default_callbacks
from ccm_madrl.experiment.sweep import run_sweep
from ccm_madrl.mec import RunRNG


# ------------------------------------------------------------------------------ a learner
class HillClimber:
    """Every device computes locally at one CPU fraction ``alpha``; after each episode the fraction
    moves by ``step`` in its current direction, which flips when the return got worse."""

    monitorable = False

    def __init__(self, cfg, rng, device="cpu"):
        self.n, self.alpha, self.step, self.last = cfg.env.n_agents, 0.5, 0.1, -np.inf
        self.stored = 0

    replay_size = property(lambda self: self.stored)

    def epsilon(self, episode: int, n_episodes: int) -> float:
        return 0.0

    def select(self, states, u, explore, epsilon):
        return np.zeros(states.shape[:2]), np.zeros(states.shape[0], dtype=bool)

    def act(self, states, explore=False, epsilon=0.0) -> Action:
        x, exceeded = self.select(states, None, explore, epsilon)
        hybrid = np.stack([x, np.full_like(x, self.alpha), np.ones_like(x)], axis=-1)
        return Action(actor=hybrid.copy(), selected=x, hybrid=hybrid, exceeded=exceeded)

    def transition_layout(self):
        return transition_layout(self.n)

    def observe(self, transitions):
        self.ret, self.stored = float(transitions["reward"].sum()), self.stored + len(transitions["reward"])

    def train(self) -> dict:
        if self.ret < self.last:
            self.step = -self.step
        self.last, self.alpha = self.ret, float(np.clip(self.alpha + self.step, 0.01, 1.0))
        return {"actor_loss": -self.ret}

    def state_dict(self):
        return {"alpha": self.alpha, "step": self.step, "last": self.last, "stored": self.stored}

    def load_state_dict(self, sd):
        self.alpha, self.step, self.last, self.stored = sd["alpha"], sd["step"], sd["last"], sd["stored"]

    def describe(self):
        return {"learner": "HillClimber", "parameters": 1}


TOY = {
    "agent": {"algorithm": "test_architecture:HillClimber"},
    "env": {"n_agents": 4, "max_steps": 3},
    "training": {"episodes": 4, "eval_episodes": 2, "checkpoint_every": 2, "tensorboard": False},
}


def test_a_learner_written_here_trains_through_the_trainer(tmp_path):
    cfg = build_config(TOY)
    learner = make_learner(cfg, RunRNG("reference", 0, 37))
    assert isinstance(learner, Learner)  # the contract (agents/base.py) is all the trainer needs
    s = Trainer(cfg, tmp_path / "r", progress=False).run()
    df = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert s.episodes_done == 4 and df["trained"].tolist() == [False, True, True, True]
    assert df["replay_size"].tolist() == [3, 6, 9, 12] and np.isfinite(s.final_return)
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert ck["learner"]["alpha"] != 0.5  # it moved


def test_the_same_learner_runs_in_a_sweep(tmp_path):
    import yaml

    spec = {"name": "toy", "base": TOY, "axes": {"env.n_agents": [3, 4]}, "seeds": [0]}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(spec))
    res = run_sweep(tmp_path / "toy.yaml", out=tmp_path / "out", workers=1, progress=False)
    assert (res.total, res.done, res.failed) == (2, 2, 0)


def test_an_unknown_learner_is_refused_by_name():
    from ccm_madrl.experiment.config import ConfigError

    with pytest.raises(ConfigError, match="agent.algorithm.*no_such_module"):
        build_config({"agent": {"algorithm": "no_such_module:Learner"}})


# ------------------------------------------------------------------------------ a callback
class StopWhenReturnAbove(Callback):
    """Early stop on a target evaluation return."""

    def __init__(self, target: float):
        self.target = target

    def on_episode_end(self, trainer, row) -> bool:
        return not (row["eval_return"] > self.target)


def test_a_callback_added_to_the_defaults(tmp_path):
    cfg = build_config(TOY, ["training.episodes=6"])
    cbs = lambda t: [StopWhenReturnAbove(-np.inf), *default_callbacks(t)]  # noqa: E731
    s = Trainer(cfg, tmp_path / "r", progress=False, callbacks=cbs).run()
    assert s.episodes_done == 2  # evaluation starts at episode episodes_before_train (1)


# ------------------------------------------------------------------------------ a mitigation
def test_a_regulariser_is_one_function_and_one_registry_entry(monkeypatch, tmp_path):
    calls = []

    def l2_actions(actors, states, coef, gen):
        calls.append(1)
        u = actors(states)
        return u, coef * (u**2).mean()

    monkeypatch.setitem(ACTOR_REGULARISERS, "l2_actions", l2_actions)  # the config accepts it now
    cfg = build_config(
        {
            "env": {"n_agents": 4, "max_steps": 2},
            "agent": {
                "replay": {"batch_size": 4},
                "architecture": {"critic_hidden": [16, 8]},
                "mitigations": {"actor_reg": "l2_actions", "actor_reg_coef": 0.1},
            },
            "training": {"episodes": 3, "eval_episodes": 1, "tensorboard": False},
            "monitor": {"enabled": False},
        }
    )
    assert make_learner(cfg, RunRNG("reference", 0, 37)).regulariser is l2_actions
    Trainer(cfg, tmp_path / "r", progress=False).run()
    assert calls  # the actor steps used it


def test_registries_are_the_configs_allowed_values():
    for model, field, registry in [
        (VariantConfig, "actor_update", UPDATE_SCHEDULES),
        (VariantConfig, "actor_objective", ACTOR_CANDIDATES),
        (MitigationsConfig, "actor_reg", ACTOR_REGULARISERS),
        (MitigationsConfig, "reward_norm", REWARD_SIGNALS),
    ]:
        assert part_registry(model.model_fields[field]).allowed() == list(registry), field


def test_the_monitor_learns_saturation_from_a_declared_property():
    from torch import nn

    from ccm_madrl.monitor.core import _is_bounded_activation

    class Clamp(nn.Module):
        bounded = True

        def forward(self, x):
            return x.clamp(-1, 1)

    assert _is_bounded_activation(Clamp()) and _is_bounded_activation(nn.Tanh())
    assert not _is_bounded_activation(nn.ReLU())


def test_the_report_reads_the_learners_description(tmp_path):
    """Table 2 from learner.json equals Table 2 from instantiated networks (runs before 0.2.0)."""
    from ccm_madrl.report.tables import table2
    from ccm_madrl.store import load

    small = {"env": {"n_agents": 4, "max_steps": 2}, "agent": {"batch_size": 4, "critic_hidden": [16, 8]},
             "training": {"episodes": 2, "eval_episodes": 1, "tensorboard": False}}  # fmt: skip
    for algo in ("ccm_madrl", "maddpg", "all_local"):
        Trainer(build_config(small, [f"agent.algorithm={algo}"]), tmp_path / algo, progress=False).run()
    dirs = [tmp_path / a for a in ("ccm_madrl", "maddpg", "all_local")]
    assert (tmp_path / "ccm_madrl" / "learner.json").exists()
    from_desc = table2(load(dirs))
    for d in dirs:
        (d / "learner.json").unlink()
    built = table2(load(dirs))
    pd.testing.assert_frame_equal(from_desc, built)
    assert len(from_desc) == 5 and from_desc["parameters (all)"].iloc[0] > 0


# ------------------------------------------------------------------------------ a sweep backend
class InProcess:
    """Runs every job in this process, one after the other."""

    def __init__(self, plan, address):
        self.threads = plan.threads

    def run(self, jobs, on_done, poll, stop):
        from ccm_madrl.experiment.sweep import run_one

        for run_id, cfg_json, run_dir in jobs:
            on_done(run_id, run_one(cfg_json, run_dir, self.threads, stop))
            poll()


def test_a_sweep_backend_is_one_class_and_one_registry_entry(tmp_path, monkeypatch):
    import json

    import yaml

    from ccm_madrl.experiment import sweep

    monkeypatch.setitem(sweep.BACKENDS, "inprocess", InProcess)
    spec = {"name": "toy", "base": TOY, "axes": {"env.n_agents": [3, 4]}, "seeds": [0, 1]}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(spec))
    res = run_sweep(tmp_path / "toy.yaml", out=tmp_path / "out", backend="inprocess", progress=False)
    assert (res.total, res.done, res.failed) == (4, 4, 0)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {e["status"] for e in man["runs"]} == {"done"}
    again = run_sweep(tmp_path / "toy.yaml", out=tmp_path / "out", backend="inprocess", progress=False)
    assert again.skipped == 4  # the plan finds them done


# ------------------------------------------------------------------------------ a config option
def test_a_config_option_added_keeps_every_run_id():
    """An option added to a sub-config (here by subclassing, as an edit of agents/config.py would)
    leaves the agent's part of the id unchanged at its default and enters it otherwise."""
    from pydantic import Field

    from ccm_madrl.agents.config import AgentConfig

    class Mitigations(MitigationsConfig):
        actor_weight_decay: float = Field(0.0, ge=0, description="L2 penalty on the actors' weights")

    class Agent(AgentConfig):
        mitigations: Mitigations = Mitigations()

    assert Agent().id_fields() == AgentConfig().id_fields()
    assert (
        Agent(actor_update="simultaneous").id_fields() == AgentConfig(actor_update="simultaneous").id_fields()
    )
    changed = Agent(mitigations={"actor_weight_decay": 0.1}).id_fields()
    assert changed.pop("mitigations.actor_weight_decay") == 0.1 and changed == AgentConfig().id_fields()
