"""The worked examples of docs/architecture.md: a learner written from scratch trains through the
trainer and a sweep with no change to either; a callback; a mitigation (a regulariser) added by one
function and one registry entry; the registries are the config's allowed values."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

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
from ccm_madrl.mec import RunRNG
from ccm_madrl.sweep import run_sweep


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
    """Table 2 from learner.json; a run from before 0.2.0 (none) is one row saying so, and the
    description the training side writes for it gives the same table (the report builds nothing)."""
    from ccm_madrl.experiment.describe import write_missing_descriptions
    from ccm_madrl.report.tables import NO_DESCRIPTION, table2
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
    missing = table2(load(dirs))
    assert list(missing["role"]) == [f"not recorded: {NO_DESCRIPTION}"] * 3
    assert write_missing_descriptions(dirs) == dirs
    built = table2(load(dirs))
    pd.testing.assert_frame_equal(from_desc, built)
    assert len(from_desc) == 5 and from_desc["parameters (all)"].iloc[0] > 0


# ------------------------------------------------------------------------------ a sweep backend
class InProcess:
    """Runs every job in this process, one after the other."""

    def __init__(self, plan, address):
        self.threads = plan.threads

    def run(self, jobs, on_done, poll, stop):
        from ccm_madrl.sweep import run_one

        for job in jobs:
            on_done(job.id, run_one(job, self.threads, stop))
            poll()


def test_a_sweep_backend_is_one_class_and_one_registry_entry(tmp_path, monkeypatch):
    import json

    import yaml

    from ccm_madrl import sweep

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


# ------------------------------------------------------------------------------ the layers
# docs/architecture.md, "Layers": data flows one way, config -> engine -> run store -> report.
SRC = Path(__file__).resolve().parents[1] / "src"
CONFIG_LAYER = ("ccm_madrl.config",)
# the read side: the run store and the report, and what they read with (the run directory's format,
# the monitor's stored tables); none of it trains or loads torch. (The package ``ccm_madrl.monitor``
# itself is no part of it: its lazy names include the measuring monitor.)
READ_SIDE = (
    "ccm_madrl",  # the package's face: __version__ and lazy names only
    "ccm_madrl.store",
    "ccm_madrl.report",
    "ccm_madrl.rundir",
    "ccm_madrl.jsonio",
    "ccm_madrl.monitor.compact",
    "ccm_madrl.monitor.stops",
)


def _in(module: str, layer: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``layer``'s or inside one of its packages (``ccm_madrl`` stands
    for the package's ``__init__`` only)."""
    whole = [m for m in layer if m != "ccm_madrl"]
    return module in layer or any(module.startswith(m + ".") for m in whole)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import statement, at module level and inside functions and classes, except under
    ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _type_checking(child):
            for other in child.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _imports(child)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the package's modules it imports (relative and absolute; ``from P import m`` is an
    edge to the submodule P.m when m is one, else to P)."""
    modules = {}
    for path in sorted((src / "ccm_madrl").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if package else parts)] = (path, package)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, (path, package) in modules.items():
        here = module if package else module.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = here
                    for _ in range(node.level - 1):
                        up = up.rpartition(".")[0]
                    base = f"{up}.{base}" if base else up
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                if (k := known(t)) and k != module and k.startswith("ccm_madrl"):
                    graph[module].add(k)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _reached(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_no_import_cycle_among_the_packages_modules():
    """Imports inside functions count: a cycle through one is a cycle of the design."""
    graph = import_graph()
    assert len(graph) > 50 and "ccm_madrl.store" in graph["ccm_madrl.report"]
    cycles = _cycles(graph)
    report = [
        " <-> ".join(c) + ": " + "; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c)
        for c in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(report)


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "ccm_madrl"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\nimport ccm_madrl.a\n"
    )
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n")
    graph = import_graph(tmp_path)
    assert graph["ccm_madrl.a"] == {"ccm_madrl.sub.b"} and graph["ccm_madrl.sub.b"] == {"ccm_madrl.a"}
    assert graph["ccm_madrl.sub.c"] == set()
    assert _cycles(graph) == [["ccm_madrl.a", "ccm_madrl.sub.b"]]


def test_data_flows_one_way_config_and_read_side_never_import_the_training_side():
    """The config reaches only the config; the run store and the report reach only the config and
    the read side (never the engine: experiment/, agents/, mec/, the monitor's torch parts, archive)."""
    graph = import_graph()
    wrong = {}
    for module in graph:
        if _in(module, CONFIG_LAYER):
            bad = {m for m in _reached(graph, module) if not _in(m, CONFIG_LAYER)}
        elif _in(module, READ_SIDE):
            bad = {m for m in _reached(graph, module) if not (_in(m, CONFIG_LAYER) or _in(m, READ_SIDE))}
        else:
            continue
        if bad:
            wrong[module] = sorted(bad)
    assert not wrong, f"the config or the read side imports the training side: {wrong}"


def test_config_store_and_report_load_no_torch():
    code = (
        "import sys, time; t = time.perf_counter(); "
        "import ccm_madrl.config, ccm_madrl.store, ccm_madrl.report; "
        "print('torch' in sys.modules, [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'numba', 'ccm_madrl.agents')], time.perf_counter() - t)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    loaded, heavy, _ = out.stdout.split(" ", 2)
    assert loaded == "False" and heavy.startswith("[]"), out.stdout


def test_the_public_names_of_the_package_still_import():
    """``from ccm_madrl.<package> import X`` keeps working for the names exported before the layers
    moved (the config's models re-exported where they were)."""
    from ccm_madrl.agents.config import FLAT_KEYS, RESOLVE, AgentConfig, reference_markdown  # noqa: F401
    from ccm_madrl.config import ExperimentConfig as Layer
    from ccm_madrl.experiment import ExperimentConfig
    from ccm_madrl.experiment.cross import CrossConfig  # noqa: F401
    from ccm_madrl.experiment.loggers import LoggingConfig  # noqa: F401
    from ccm_madrl.experiment.runner import RunDirConflict, RunSummary  # noqa: F401
    from ccm_madrl.mec.config import MECConfig  # noqa: F401
    from ccm_madrl.monitor import GradientFlowMonitor, agent_stops  # noqa: F401
    from ccm_madrl.monitor.integration import SUMMARY, read_agents  # noqa: F401

    assert ExperimentConfig is Layer and AgentConfig is Layer.model_fields["agent"].annotation
