"""The one episode loop (experiment/engine.py): a run alone and the runs of a pack go through the same
engine, so every feature works the same for every R; here: ``training.eval_every > 1`` in a pack, an
early stop and an interrupt inside a pack, that no other module holds an episode loop, and that one
module writes the monitor's files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from ccm_madrl.experiment import Callback, Trainer, build_config
from ccm_madrl.experiment.engine import PackedBatch, SoloBatch
from ccm_madrl.experiment.pack import PackTrainer, packable
from ccm_madrl.experiment.stop import StopToken
from ccm_madrl.sweep.jobs import PackJob, RunJob
from ccm_madrl.sweep.packing import pack_jobs
from test_pack import assert_like_alone, configs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # exactness at one thread (conftest)

SRC = Path(__file__).resolve().parents[1] / "src" / "ccm_madrl"


def with_eval_every(cfgs: list, k: int) -> list:
    return [build_config(c.model_dump(mode="json"), [f"training.eval_every={k}"]) for c in cfgs]


@pytest.mark.parametrize("rng_mode", ["reference", "independent"])
def test_a_pack_with_eval_every_gives_each_run_its_trajectory_alone(tmp_path, rng_mode):
    """``training.eval_every = 2`` packs (no longer refused) and evaluates on the run's schedule:
    every run's 20 episodes equal those of the run alone (the same bounds as the pack tests,
    COLUMNS; measured on these configs at one thread: returns <= 1.4e-7, losses and Q <= 1.2e-6,
    relative, as with eval_every = 1), NaN in the same episodes; in reference mode the skipped
    evaluations change the training stream of each run as they do alone (its training returns follow)."""
    cfgs = with_eval_every(configs("simultaneous", rng_mode), 2)
    assert all(packable(c) is None for c in cfgs)
    summaries = PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()
    assert [s.state for s in summaries] == ["done"] * 4
    ebt = cfgs[0].agent.replay.episodes_before_train
    scheduled = [ep >= ebt and ((ep - ebt) % 2 == 0 or ep == 19) for ep in range(20)]
    assert 0 < sum(scheduled) < 20 - ebt  # some evaluations skipped
    for c in cfgs:
        p = assert_like_alone(tmp_path, c, 20)
        assert p["eval_return"].notna().tolist() == scheduled


class StopAfter(Callback):
    """Asks its run to stop after ``n`` episodes (an early stop by a callback)."""

    def __init__(self, n: int):
        self.n = n

    def on_episode_end(self, trainer, row) -> bool:
        return trainer.episodes_done < self.n


def test_a_run_stopped_by_its_callback_leaves_its_pack_and_the_others_go_on(tmp_path, monkeypatch):
    """Run r1's callback stops it after 3 episodes: it ends done (early-stopped, checkpointed at 3),
    the other runs train their 8 episodes with the trajectories they have alone."""
    import ccm_madrl.experiment.pack as pack_mod

    real = pack_mod.pack_member_callbacks

    def callbacks(trainer):
        cbs = real(trainer)
        return [StopAfter(3), *cbs] if trainer.cfg.name == "r1" else cbs

    monkeypatch.setattr(pack_mod, "pack_member_callbacks", callbacks)
    cfgs = with_eval_every(configs("simultaneous", episodes=8), 2)
    summaries = PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()
    assert [(s.state, s.episodes_done) for s in summaries] == [
        ("done", 8),
        ("done", 3),
        ("done", 8),
        ("done", 8),
    ]
    st = json.loads((tmp_path / "pack" / "r1" / "status.json").read_text())
    assert st["state"] == "done" and st["early_stopped"] and st["episodes_done"] == 3
    assert torch.load(tmp_path / "pack" / "r1" / "checkpoint.pt", weights_only=False)["episodes_done"] == 3
    for c in (cfgs[0], cfgs[2]):
        assert_like_alone(tmp_path, c, 8)


def test_an_interrupted_pack_with_eval_every_resumes_bit_identically(tmp_path):
    """A stop request (Ctrl-C / SIGTERM, a sweep's stop) after episode 5 of a pack with
    ``eval_every = 2`` (reference mode: the skipped evaluations move the training stream): every run
    checkpoints and ends ``interrupted``; run again, each ends with the metrics of an uninterrupted
    pack, bit for bit."""
    cfgs = with_eval_every(configs("sequential", episodes=10), 2)
    dirs = lambda root: [tmp_path / root / c.name for c in cfgs]  # noqa: E731
    PackTrainer(cfgs, dirs("whole")).run()
    token = StopToken()
    cut = PackTrainer(cfgs, dirs("cut"), stop=token)
    real = cut.episode

    def episode(ep):
        if ep == 5:
            token.request()
        return real(ep)

    cut.episode = episode
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    for d in dirs("cut"):
        st = json.loads((d / "status.json").read_text())
        assert (st["state"], st["episodes_done"]) == ("interrupted", 6)
    assert [s.episodes_done for s in PackTrainer(cfgs, dirs("cut")).run()] == [10] * 4
    for a, b in zip(dirs("whole"), dirs("cut")):
        x, y = pd.read_parquet(a / "metrics.parquet"), pd.read_parquet(b / "metrics.parquet")
        cols = [k for k in x.columns if not k.startswith("time_")]
        pd.testing.assert_frame_equal(x[cols], y[cols])


def test_the_solo_and_the_pack_engine_batch_their_learners(tmp_path):
    """A run alone trains on its own learner (a batch of one), a pack on the packed learner; both
    through the same engine class."""
    cfgs = with_eval_every(configs("simultaneous", episodes=3), 2)
    t = Trainer(cfgs[0], tmp_path / "alone", progress=False, quiet=True)
    assert t.run().state == "done"
    assert isinstance(t.engine.batch, SoloBatch) and t.engine.batch.learner is t.learner
    pt = PackTrainer(cfgs[:2], [tmp_path / "p0", tmp_path / "p1"])
    pt.run()
    assert isinstance(pt.batch, PackedBatch) and pt.batch.n_runs == 2
    assert type(pt).__mro__[1] is type(t.engine).__mro__[1]  # both engines are the one Engine


def test_pack_jobs_pack_configs_with_eval_every():
    """A sweep's runs with ``training.eval_every = 3`` are packed like any other."""
    cfgs = with_eval_every(configs(), 3)
    jobs = [RunJob(c.id(), c.model_dump(mode="json"), f"runs/{c.id()}") for c in cfgs]
    out = pack_jobs(jobs, 4)
    assert len(out) == 1 and isinstance(out[0], PackJob) and len(out[0].members) == 4
    assert out[0].members[0].config["training"]["eval_every"] == 3


def _functions(tree: ast.AST):
    """(qualified name, node) of every function, methods as Class.method."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for f in node.body:
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{node.name}.{f.name}", f
        elif isinstance(node, ast.Module):
            for f in node.body:
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f.name, f


def _calls(fn: ast.AST, attr: str) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attr
        for n in ast.walk(fn)
    )


def episode_loops(root: Path = SRC) -> dict[str, list[str]]:
    """Module -> its functions that run an episode of training: they step an environment and hand
    the transitions to a learner (``.step(`` and ``.observe(``, other than an ``observe`` passing them on)."""
    out: dict[str, list[str]] = {}
    for f in sorted(root.rglob("*.py")):
        tree = ast.parse(f.read_text())
        for name, fn in _functions(tree):
            if name.split(".")[-1] != "observe" and _calls(fn, "observe") and _calls(fn, "step"):
                out.setdefault(str(f.relative_to(root)), []).append(name)
    return out


def test_one_module_holds_the_episode_loop():
    """The episode (evaluation, acting, observing, training) is written once, in experiment/engine.py,
    for every R; the loop over episodes (``_loop``) too; runner.py and pack.py only delegate."""
    assert episode_loops() == {"experiment/engine.py": ["Engine.episode"]}
    loops = {
        str(f.relative_to(SRC)): [n for n, _ in _functions(ast.parse(f.read_text())) if n.endswith("._loop")]
        for f in SRC.rglob("*.py")
    }
    assert {k: v for k, v in loops.items() if v} == {"experiment/engine.py": ["Engine._loop"]}


def test_the_loop_finder_sees_a_second_loop(tmp_path):
    """episode_loops finds a function that steps an environment and feeds a learner, wherever it is."""
    (tmp_path / "other.py").write_text(
        "class T:\n    def run(self, env, learner):\n        s = env.step(1)\n        learner.observe(s)\n"
        "    def observe(self, b):\n        self.inner.observe(b); self.env.step(0)\n"
    )
    assert episode_loops(tmp_path) == {"other.py": ["T.run"]}


def _callers(root: Path, names: set[str]) -> set[str]:
    """Modules (relative paths) that call a function of ``names`` (by name or attribute)."""
    out = set()
    for f in sorted(root.rglob("*.py")):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Call):
                fn = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None)
                if fn in names:
                    out.add(str(f.relative_to(root)))
    return out


def test_one_module_writes_the_monitors_files(tmp_path):
    """A run alone, a run in a pack and another library's loop use one session class
    (MonitorSession, monitor/integration.py) and write their ``monitor/`` through MonitorFiles
    (monitor/integration.py), the only caller of the part, summary and compaction writers."""
    from ccm_madrl.experiment.callbacks import MonitorCallback, PackRunMonitor
    from ccm_madrl.integrations import MonitorSession as Reexported
    from ccm_madrl.monitor import integration
    from ccm_madrl.monitor.integration import MonitorFiles, MonitorSession

    assert _callers(SRC, {"write_part", "write_summary", "compact_monitor"}) == {"monitor/integration.py"}
    (tmp_path / "x.py").write_text("from m import write_part\nwrite_part('d', [])\n")
    assert _callers(tmp_path, {"write_part"}) == {"x.py"}  # the finder sees a call
    assert Reexported is MonitorSession and not hasattr(integration, "RunMonitor")
    cfg = build_config({"monitor": {"enabled": True}})
    from ccm_madrl.agents import make_learner
    from ccm_madrl.mec.rng import RunRNG

    learner = make_learner(cfg, RunRNG(cfg.rng_mode, cfg.seed, cfg.env_seed), torch.device("cpu"))
    for session in (
        MonitorCallback(learner, cfg, tmp_path / "a").monitor,
        PackRunMonitor(cfg, tmp_path / "p").monitor,
        MonitorSession(run_dir=tmp_path / "s"),
    ):
        assert type(session) is MonitorSession and isinstance(session.files, MonitorFiles)
