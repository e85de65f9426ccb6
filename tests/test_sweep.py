"""Sweeps: schema errors, stable expansion, crash isolation, SIGKILL + resume, Ray vs local, the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ccm_madrl.cli import main
from ccm_madrl.experiment import ConfigError, Trainer
from ccm_madrl.store import load
from ccm_madrl.sweep import expand, load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
NON_TIME = lambda df: df[[c for c in df.columns if not c.startswith("time_")]]  # noqa: E731


def write(tmp_path, data, name="sweep.yaml"):
    f = tmp_path / name
    f.write_text(yaml.safe_dump(data))
    return f


def smoke_base():
    return yaml.safe_load(SMOKE.read_text())["base"]


def start_sweep(f, out, workers):
    """``ccm-madrl sweep`` in its own process group (a test can signal the sweep alone or all of it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ccm_madrl.cli", "sweep", str(f), "--out", str(out), "--workers", str(workers)]
        + ["--no-progress"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "data, match",
    [
        ({"name": "x", "axes": {"agent.lr": [0.1]}}, r"(?s)invalid sweep value .*agent\.lr: unknown key"),
        (
            {"name": "x", "axes": {"agent.actor_lr": [0.1, -1]}},
            r"agent\.actor_lr: Input should be greater than 0 \(got -1\)",
        ),
        ({"name": "x", "axes": {"agent.optimizer": ["adamw"]}}, r"agent\.optimizer: must be one of"),
        ({"name": "x", "axes": {"agent.actor_lr": []}}, r"axis 'agent.actor_lr' has no values"),
        ({"name": "x", "axes": {"seed": [1, 2]}}, r"use 'seeds:'"),
        ({"name": "x", "grid": {}}, r"grid: unknown key"),
        ({"axes": {}}, r"name: Field required"),
        ({"name": "x", "axes": {"agent.actor_lr": [0.1, 0.1]}}, r"resolve to the same config"),
    ],
)
def test_sweep_schema_errors_are_clear(tmp_path, data, match):
    f = write(tmp_path, data)
    with pytest.raises(ConfigError, match=match):
        spec, base = load_sweep(f)
        expand(spec, base, str(f))


def test_expansion_is_stable_and_independent_of_axis_order(tmp_path):
    a = {
        "name": "g",
        "base": smoke_base(),
        "axes": {"agent.actor_lr": [1e-4, 1e-1], "agent.critic_lr": [1e-3, 1e-2]},
        "seeds": 3,
    }
    b = dict(a, axes={"agent.critic_lr": [1e-3, 1e-2], "agent.actor_lr": [1e-4, 1e-1]})
    runs_a = expand(*load_sweep(write(tmp_path, a, "a.yaml")))
    runs_a2 = expand(*load_sweep(write(tmp_path, a, "a.yaml")))
    runs_b = expand(*load_sweep(write(tmp_path, b, "b.yaml")))
    assert len(runs_a) == 2 * 2 * 3 == len({r.id for r in runs_a})
    assert [r.id for r in runs_a] == [r.id for r in runs_a2]
    assert {r.id for r in runs_a} == {r.id for r in runs_b}
    assert {r.overrides["seed"] for r in runs_a} == {0, 1, 2}


def test_shipped_configs_expand():
    counts = {}
    for f in ["paper/table1_s10.yaml", "paper/table1_s100.yaml", "followup/grid_s100.yaml", "smoke.yaml"]:
        spec, base = load_sweep(ROOT / "configs" / f)
        runs = expand(spec, base)
        counts[f] = len(runs)
        if f.startswith(("paper", "followup")):
            assert {r.config.training.episodes for r in runs} == {2000}
            assert {(r.config.agent.actor_lr, r.config.agent.critic_lr) for r in runs} == {
                (a, c) for a in (1e-4, 1e-3, 1e-2, 1e-1) for c in (1e-4, 1e-3, 1e-2, 1e-1)
            }
    assert counts == {
        "paper/table1_s10.yaml": 160,
        "paper/table1_s100.yaml": 160,
        "followup/grid_s100.yaml": 160,
        "smoke.yaml": 4,
    }
    spec, base = load_sweep(ROOT / "configs/followup/grid_s100.yaml")
    runs = expand(spec, base)
    assert {r.config.env.max_steps for r in runs} == {100} and {
        r.config.training.eval_episodes for r in runs
    } == {3}
    assert 42 in {r.config.seed for r in runs}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA to make the run fail")
def test_a_failing_run_is_isolated_and_reported(tmp_path, capsys):
    data = {"name": "fail", "base": smoke_base(), "axes": {"device": ["cpu", "cuda"]}, "seeds": 1}
    f = write(tmp_path, data)
    rc = main(["sweep", str(f), "--out", str(tmp_path / "out"), "--workers", "2", "--no-progress"])
    assert rc == 1 and "1 failed" in capsys.readouterr().out
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())["runs"]
    by = {e["overrides"]["device"]: e for e in man}
    assert by["cpu"]["status"] == "done" and by["cpu"]["episodes_done"] == 6
    assert by["cuda"]["status"] == "failed" and "CUDA" in by["cuda"]["traceback"]
    # the device is checked before the run directory is created: nothing is left behind
    assert not (tmp_path / "out" / by["cuda"]["run_dir"]).exists()


def test_sigkill_mid_sweep_then_resume_loses_nothing(tmp_path):
    base = smoke_base()
    base["training"].update(episodes=16, checkpoint_every=2)
    data = {"name": "kill", "base": base, "axes": {"agent.actor_lr": [1e-4, 1e-1]}, "seeds": 2}
    f = write(tmp_path, data)
    out = tmp_path / "out"
    proc = start_sweep(f, out, workers=1)
    deadline = time.time() + 240
    done_first = []
    try:
        while time.time() < deadline:
            time.sleep(0.2)
            if not (out / "manifest.json").exists():
                continue
            man = json.loads((out / "manifest.json").read_text())["runs"]
            done_first = [e for e in man if e.get("status") == "done"]
            running = [
                e
                for e in man
                if (out / e["run_dir"] / "checkpoint.pt").exists() and e.get("status") != "done"
            ]
            if done_first and running:
                break
        else:
            pytest.fail("the sweep did not reach a finished run and a checkpointed running run in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    interrupted = [
        e for e in json.loads((out / "manifest.json").read_text())["runs"] if e.get("status") != "done"
    ]
    mtimes = {e["id"]: (out / e["run_dir"] / "metrics.parquet").stat().st_mtime_ns for e in done_first}
    res = run_sweep(f, out, workers=1, progress=False)
    assert res.total == 4 and res.done == 4 and res.failed == 0 and res.skipped == len(done_first)
    for rid, mt in mtimes.items():  # finished runs were not run again
        assert (out / "runs" / rid / "metrics.parquet").stat().st_mtime_ns == mt
    # every run equals an uninterrupted run of the same config, episode for episode
    spec, b = load_sweep(f)
    by_id = {r.id: r for r in expand(spec, b)}
    for e in interrupted[:2]:
        ref = tmp_path / f"ref-{e['id']}"
        Trainer(by_id[e["id"]].config, ref, progress=False).run()
        got = pd.read_parquet(out / "runs" / e["id"] / "metrics.parquet")
        pd.testing.assert_frame_equal(NON_TIME(got), NON_TIME(pd.read_parquet(ref / "metrics.parquet")))


@pytest.mark.ray
def test_ray_backend_matches_local_backend(tmp_path):
    pytest.importorskip("ray")
    local = run_sweep(SMOKE, tmp_path / "local", backend="local", workers=2, progress=False)
    ray_ = run_sweep(SMOKE, tmp_path / "ray", backend="ray", progress=False)
    assert local.done == ray_.done == 4 and local.failed == ray_.failed == 0
    for rd in sorted((tmp_path / "local" / "runs").iterdir()):
        a = pd.read_parquet(rd / "metrics.parquet")
        b = pd.read_parquet(tmp_path / "ray" / "runs" / rd.name / "metrics.parquet")
        pd.testing.assert_frame_equal(NON_TIME(a), NON_TIME(b))


@pytest.mark.ray
def test_ray_backend_runs_packs(tmp_path):
    """``--backend ray --pack 2``: the 4 smoke runs as 2 Ray tasks of 2 packed runs each, one run
    directory per run, each equal to the run trained alone (local backend, unpacked) to 1e-6."""
    pytest.importorskip("ray")
    local = run_sweep(SMOKE, tmp_path / "local", backend="local", workers=2, progress=False)
    ray_ = run_sweep(SMOKE, tmp_path / "ray", backend="ray", progress=False, pack=2)
    assert local.done == ray_.done == 4 and ray_.failed == 0
    sizes = []
    for rd in sorted((tmp_path / "local" / "runs").iterdir()):
        a = pd.read_parquet(rd / "metrics.parquet")
        b = pd.read_parquet(tmp_path / "ray" / "runs" / rd.name / "metrics.parquet")
        assert list(a["episode"]) == list(b["episode"])
        for col in ("eval_return", "train_return"):
            x, y = a[col].to_numpy(float), b[col].to_numpy(float)
            assert np.array_equal(np.isnan(x), np.isnan(y))
            ok = ~np.isnan(x)
            assert np.allclose(x[ok], y[ok], rtol=1e-6, atol=0), (rd.name, col)
        prov = json.loads((tmp_path / "ray" / "runs" / rd.name / "provenance.json").read_text())
        sizes.append(prov["pack"]["size"])
    assert sizes == [2, 2, 2, 2]


def test_store_loads_sweeps_and_runs(tmp_path):
    run_sweep(SMOKE, tmp_path / "s1", workers=2, progress=False)
    s = load(tmp_path / "s1")
    runs = s.runs
    assert len(runs) == 4 and set(runs["status"]) == {"done"}
    for col in (
        "cfg.agent.actor_lr",
        "cfg.seed",
        "cfg.rng_mode",
        "prov.commit",
        "prov.version",
        "prov.device",
        "prov.actor_update",
        "final_return",
        "all_actors_stop_exact",
    ):
        assert col in runs.columns
    assert len(s.metrics) == 4 * 6 and set(s.metrics["run_id"]) == set(runs["run_id"])
    assert set(s.monitor["role"]) == {"actors", "critic"} and len(s.stops) == 4 * 13
    one = load(runs["run_dir"].iloc[0])
    assert len(one.runs) == 1 and len(one.metrics) == 6
    with pytest.warns(UserWarning, match="2 copies of one run"):  # the same run given twice counts once
        both = load([tmp_path / "s1", runs["run_dir"].iloc[0]])
    assert len(both.runs) == 4 and len(both.duplicates) == 1
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load(tmp_path / "nope")


def test_cli_sweep_applies_and_records_command_line_changes(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "sweep",
            str(SMOKE),
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-progress",
            "--set",
            "training.episodes=3",
            "--seeds",
            "[7]",
            "--axis",
            "agent.actor_lr=[0.001]",
            "--name",
            "smoke_small",
        ]
    )
    assert rc == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["sweep"] == "smoke_small" and len(man["runs"]) == 1
    assert (
        man["runs"][0]["overrides"] == {"agent.actor_lr": 0.001, "seed": 7}
        and man["runs"][0]["episodes_done"] == 3
    )
    recorded = yaml.safe_load((out / "sweep.yaml").read_text())
    assert recorded["seeds"] == [7] and recorded["base"]["training"]["episodes"] == 3
    assert recorded["axes"] == {"agent.actor_lr": [0.001]}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_only_the_sweep_process_leaves_no_orphans(tmp_path, sig):
    base = smoke_base()
    base["training"].update(episodes=40, checkpoint_every=2)
    f = write(
        tmp_path, {"name": "orphans", "base": base, "axes": {"agent.actor_lr": [1e-4, 1e-1]}, "seeds": 3}
    )
    out = tmp_path / "out"
    proc = start_sweep(f, out, workers=2)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not list(out.glob("runs/*/checkpoint.pt")):
            time.sleep(0.2)
        assert list(out.glob("runs/*/checkpoint.pt")), "no run reached a checkpoint"
        os.kill(proc.pid, sig)  # the sweep process only, not its workers
        proc.wait(timeout=120)
        deadline = time.time() + 120
        while time.time() < deadline and _group_alive(proc.pid):
            time.sleep(0.5)
        assert not _group_alive(proc.pid), "worker processes outlived the sweep"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    started = [d for d in (out / "runs").iterdir()]
    assert len(started) < 6  # queued runs were not started after the sweep died
    res = run_sweep(f, out, workers=2, progress=False)
    assert res.done == 6 and res.failed == 0


def test_sigterm_to_the_sweep_interrupts_its_running_runs_at_once(tmp_path):
    """The runs must not be left to finish (they could take hours): each checkpoints and stops, and
    the queued runs (some already handed to a worker's queue) do not start."""
    base = smoke_base()
    base["training"].update(episodes=100_000, checkpoint_every=2)
    f = write(tmp_path, {"name": "term", "base": base, "axes": {"agent.actor_lr": [1e-4, 1e-1]}, "seeds": 3})
    out = tmp_path / "out"
    proc = start_sweep(f, out, workers=2)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(list(out.glob("runs/*/checkpoint.pt"))) < 2:
            time.sleep(0.2)
        assert len(list(out.glob("runs/*/checkpoint.pt"))) == 2, "the runs did not reach a checkpoint"
        os.kill(proc.pid, signal.SIGTERM)  # the sweep process only
        proc.wait(timeout=60)
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    started = [rd for rd in (out / "runs").iterdir() if (rd / "status.json").exists()]
    assert len(started) == 2  # the two that were running; none of the four queued ones started
    for rd in started:
        status = json.loads((rd / "status.json").read_text())
        assert status["state"] == "interrupted"
        assert 2 <= status["episodes_done"] < 100_000
    manifest = json.loads((out / "manifest.json").read_text())
    runs = manifest["runs"].values() if isinstance(manifest["runs"], dict) else manifest["runs"]
    # the runs that never started are pending again (to run on the next call), not left queued
    assert sorted(r["status"] for r in runs) == ["interrupted", "interrupted"] + ["pending"] * 4


def test_pool_and_threads_follow_the_cpu_affinity(tmp_path, monkeypatch):
    """Under taskset / a cpuset the sweep sizes itself to the cores it may use, not the machine's."""
    import ccm_madrl.sweep.control as sw
    from ccm_madrl.sweep import LocalPool

    seen = {}
    monkeypatch.setattr(sw.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(LocalPool, "run", lambda self, *a: seen.update(w=self.workers, t=self.threads))
    run_sweep(SMOKE, tmp_path / "out", progress=False)
    assert seen == {"w": 1, "t": 1}
    monkeypatch.setattr(sw.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    run_sweep(SMOKE, tmp_path / "out2", workers=2, progress=False)
    assert seen == {"w": 2, "t": 2}


def test_sweep_progress_is_plain_lines_where_stdout_is_not_a_terminal():
    """A sweep in a log file (nohup, CI) shows its progress as plain lines: at the start, every
    interval, at each finished run and at the end; --no-progress shows nothing."""
    import io

    from ccm_madrl.sweep.progress import SweepProgress, duration

    buf = io.StringIO()
    with SweepProgress(True, "grid", 4, 1, 400, 100, every_s=0.0, stream=buf) as p:
        p.episodes(200)
        p.run_finished("done")
        p.run_finished("diverged")
    lines = buf.getvalue().splitlines()
    assert [x.split(":")[0] for x in lines] == ["grid [start]", "grid [progress]", "grid [a run done]",
                                                "grid [a run diverged]", "grid [end]"]  # fmt: skip
    assert "runs 1/4 finished; episodes 200/400 (50%)" in lines[1] and "ETA" in lines[1]
    assert "runs 3/4 finished, 1 diverged; episodes 200/400" in lines[-1]
    quiet = io.StringIO()
    with SweepProgress(False, "grid", 4, 1, 400, 100, stream=quiet) as p:
        p.episodes(200)
        p.run_finished("done")
    assert quiet.getvalue() == ""
    assert (duration(12.4), duration(250), duration(3900)) == ("12s", "4m10s", "1h05m")


def test_a_sweep_says_which_backend_runs_it_where_and_how_many_at_once(tmp_path, monkeypatch, capsys):
    from ccm_madrl.sweep import LocalPool, RayTasks

    assert LocalPool(2, 1).describe(5) == (
        "backend local: 2 worker process(es) at once on this machine, 1 torch thread(s) each"
    )
    assert LocalPool(4, 1).describe(3).startswith("backend local: 3 worker process(es)")
    assert RayTasks(None, workers=3).describe(10) == (
        "backend ray: a local Ray instance, at most 3 task(s) in flight, 1 CPU(s) and 0 GPU(s) per task"
    )
    assert RayTasks("ray://head:10001").describe(10).startswith("backend ray: the cluster at ray://head:10001, every")
    monkeypatch.setattr(LocalPool, "run", lambda self, jobs, on_done, poll, stop: None)
    run_sweep(SMOKE, tmp_path / "s", workers=1, progress=True)
    out = capsys.readouterr().out
    name = load_sweep(SMOKE)[0].name
    assert f"{name}: backend local: 1 worker process(es) at once on this machine" in out


def test_the_sweep_package_has_small_functions_and_one_job_per_module():
    """No function of ``ccm_madrl.sweep`` runs over 60 lines, and its modules are the ones
    ``docs/architecture.md`` names."""
    import ast

    pkg = Path(__file__).resolve().parents[1] / "src" / "ccm_madrl" / "sweep"
    long = {}
    for f in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long[f"{f.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long, long
    modules = {f.stem for f in pkg.glob("*.py")}
    assert modules == {"__init__", "plan", "options", "jobs", "packing", "control", "backends", "local",
                       "ray_tasks", "slurm", "manifest", "progress", "run"}  # fmt: skip
