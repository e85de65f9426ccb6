"""Runs that survive damage and batch systems: two checkpoints and a damaged newest one, resume with
another thread setting (bit-identical, provenance segments), the heartbeat and stale runs, progress
lines in a log, strict JSON, and the documented metrics columns."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.experiment.runner import effective_state
from ccm_madrl.store import load
from ccm_madrl.sweep import run_states

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "env": {"n_agents": 8, "max_steps": 3},
    "agent": {"batch_size": 8, "critic_hidden": [32, 16], "actor_update": "sequential"},
    "training": {"episodes": 9, "eval_episodes": 2, "checkpoint_every": 2, "tensorboard": False},
    "monitor": {"enabled": True},
}
NON_TIME = lambda df: df[[c for c in df.columns if not c.startswith("time_")]]  # noqa: E731


def crash_at(monkeypatch, episode: int):
    """Make Trainer.episode die at ``episode`` like kill -9 (nothing written); returns the undo."""
    original = Trainer.episode

    def dying(self, ep):
        if ep == episode:
            raise SystemExit("killed")
        return original(self, ep)

    monkeypatch.setattr(Trainer, "episode", dying)
    return lambda: monkeypatch.setattr(Trainer, "episode", original)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("full") / "run"
    Trainer(build_config(SMALL), d, progress=False).run()
    return d


def test_the_last_two_checkpoints_are_kept(uninterrupted):
    names = sorted(p.name for p in uninterrupted.glob("checkpoint*"))
    assert names == ["checkpoint.prev.pt", "checkpoint.pt"]
    eps = [
        torch.load(uninterrupted / n, weights_only=False)["episodes_done"]
        for n in ("checkpoint.pt", "checkpoint.prev.pt")
    ]
    assert eps == [9, 8]


def test_truncated_newest_checkpoint_resumes_from_the_previous_one(
    uninterrupted, tmp_path, monkeypatch, capsys
):
    cfg = build_config(SMALL)
    undo = crash_at(monkeypatch, 7)
    with pytest.raises(SystemExit):
        Trainer(cfg, tmp_path / "r", progress=False).run()
    undo()
    ck = tmp_path / "r" / "checkpoint.pt"
    assert torch.load(ck, weights_only=False)["episodes_done"] == 6
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 3])  # a full disk / a bad copy
    capsys.readouterr()
    Trainer(cfg, tmp_path / "r", progress=False).run()
    out = capsys.readouterr()
    warn = [ln for ln in out.err.splitlines() if "checkpoint" in ln]
    assert len(warn) == 1 and str(ck) in warn[0] and "damaged" in warn[0] and "checkpoint.prev.pt" in warn[0]
    assert "resuming after episode 4" in out.out
    assert (tmp_path / "r" / "checkpoint.pt.damaged").exists()
    a = pd.read_parquet(uninterrupted / "metrics.parquet")
    b = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    pd.testing.assert_frame_equal(NON_TIME(a), NON_TIME(b))
    prov = json.loads((tmp_path / "r" / "provenance.json").read_text())
    assert [s["resumed_from_episode"] for s in prov["segments"]] == [0, 4]


def test_resume_with_another_thread_setting_is_bit_identical(uninterrupted, tmp_path, monkeypatch):
    cfg = build_config(SMALL)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        undo = crash_at(monkeypatch, 5)
        with pytest.raises(SystemExit):
            Trainer(cfg, tmp_path / "r", progress=False).run()
        undo()
        torch.set_num_threads(3)  # the machine's setting when the run resumes
        resumed = Trainer(cfg, tmp_path / "r", progress=False)
        resumed.run()
        assert torch.get_num_threads() == 3  # restored after the run
    finally:
        torch.set_num_threads(before)
    a = pd.read_parquet(uninterrupted / "metrics.parquet")
    b = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    pd.testing.assert_frame_equal(NON_TIME(a), NON_TIME(b))
    full = torch.load(uninterrupted / "checkpoint.pt", weights_only=False)["learner"]
    mine = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)["learner"]
    for k in ("actors", "critic"):
        for name, t in full[k].items():
            assert torch.equal(t, mine[k][name]), (k, name)
    prov = json.loads((tmp_path / "r" / "provenance.json").read_text())
    segs = prov["segments"]
    assert [s["resumed_from_episode"] for s in segs] == [0, 4]
    assert all(s["threads"] == 1 and s["torch_threads"] == 1 for s in segs)
    assert all(s["hostname"] and s["commit"] and s["time_utc"] and s["version"] for s in segs)
    assert prov["resumed_from_episode"] == 0  # the top level: the first segment


def test_one_id_rule_keeps_the_ids_of_earlier_runs():
    """Fields in ID_NEUTRAL_AT_DEFAULT are out of the id at their default and in it otherwise; every
    other field is in it. The pinned id is configs/base.yaml's before the rule replaced three special
    cases (commit 8f0d70e)."""
    from ccm_madrl.experiment.config import ID_NEUTRAL_AT_DEFAULT, load_yaml

    base = build_config(load_yaml(Path(__file__).parents[1] / "configs" / "base.yaml"))
    assert base.id() == "193b3308d17d"
    assert set(ID_NEUTRAL_AT_DEFAULT) == {
        "threads",
        "kind",
        "cross",
        "training.eval_every",
        "monitor.rank_interval",
        "training.device_resident",
    }  # the agent's options: the same rule through AgentConfig.id_fields (tests/test_config_migration.py)
    assert build_config({}, ["training.eval_every=5"]).id() != build_config({}).id()
    assert build_config({}, ["agent.argmax_row_skip=true"]).id() != build_config({}).id()
    assert build_config({}, ["threads=2"]).id() != build_config({}).id()
    cross = {"library": "sb3", "algo": "td3", "env": "Pendulum-v1", "total_steps": 10, "actor_lr": 1e-3}
    assert build_config({"kind": "cross", "cross": cross}).id() != build_config({}).id()
    assert build_config({}, ["published_code=44fba1b"]).id() != build_config({}).id()


def test_threads_field_sets_torch_threads_and_keeps_old_ids(tmp_path):
    cfg = build_config(SMALL)
    d = cfg.model_dump(mode="json")
    assert cfg.threads == 1 and d.pop("threads") == 1 and d.pop("name")
    assert d.pop("kind") == "mec" and d.pop("cross") is None  # MEC runs: no run-kind fields in the id either
    assert d.pop("logging") == {"wandb": None, "mlflow": None}  # where a run is logged: never in the id
    d["agent"] = cfg.agent.id_fields()  # the agent's options under their flat names (docs/config.md)
    assert d["training"].pop("eval_every") == 1 and "argmax_row_skip" not in d["agent"]  # nor these
    assert d["monitor"].pop("rank_interval") == 50  # the plasticity ranks' interval, at its default
    assert d["training"].pop("device_resident") == "auto"  # the device-resident path, at its default
    # the default leaves the id as it was before the field existed (run directories stay resumable)
    assert cfg.id() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    two = build_config(SMALL, ["threads=2"])
    assert two.id() != cfg.id()
    seen = []
    original = Trainer.episode

    class Spy(Trainer):
        def episode(self, ep):
            seen.append(torch.get_num_threads())
            return original(self, ep)

    Spy(build_config(SMALL, ["threads=2", "training.episodes=2"]), tmp_path / "r", progress=False).run()
    assert seen == [2, 2]
    assert json.loads((tmp_path / "r" / "provenance.json").read_text())["threads"] == 2


def strict(text: str):
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(text, parse_constant=bad)


def test_every_json_file_is_strict(uninterrupted):
    files = list(uninterrupted.rglob("*.json"))
    assert {f.name for f in files} >= {"status.json", "provenance.json", "summary.json"}
    summary = strict((uninterrupted / "monitor" / "summary.json").read_text())
    assert summary["all_actors_stop_exact"] is None  # a stop that never happened: null, not NaN
    for f in files:
        strict(f.read_text())


def documented_metrics_columns() -> set[str]:
    text = (ROOT / "docs" / "run_store.md").read_text()
    section = text.split("## metrics.parquet", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.M))


@pytest.mark.parametrize("algorithm", ["ccm_madrl", "maddpg", "all_local"])
def test_docs_list_exactly_the_metrics_columns(uninterrupted, tmp_path, algorithm):
    if algorithm == "ccm_madrl":
        cols = set(pd.read_parquet(uninterrupted / "metrics.parquet").columns)
    else:
        cfg = build_config(SMALL, [f"agent.algorithm={algorithm}", "training.episodes=3"])
        Trainer(cfg, tmp_path / "r", progress=False).run()
        cols = set(pd.read_parquet(tmp_path / "r" / "metrics.parquet").columns)
    doc = documented_metrics_columns()
    assert cols <= doc, f"columns missing from docs/run_store.md: {sorted(cols - doc)}"
    if algorithm == "ccm_madrl":  # the monitored run has every column
        assert doc == cols, f"documented but absent: {sorted(doc - cols)}"


def test_batch_output_heartbeat_and_stale_after_kill_9(tmp_path):
    cfg = json.loads(json.dumps(SMALL))
    cfg["training"].update(episodes=100000, checkpoint_every=5)
    cfg["monitor"]["enabled"] = False
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(cfg))
    log = tmp_path / "train.log"
    with open(log, "w") as f:  # stdout is a file, as under nohup or a batch system
        p = subprocess.Popen(
            [sys.executable, "-m", "ccm_madrl.cli", "train", "long.yaml", "--run-dir", "run"],
            cwd=tmp_path,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
        )
    status = tmp_path / "run" / "status.json"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            st = json.loads(status.read_text()) if status.exists() else {}
            if st.get("state") == "running" and st.get("episodes_done", 0) >= 5:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the run did not start: {log.read_text()}")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    lines = log.read_text().splitlines()
    assert lines[0] == "run directory: run"
    assert re.fullmatch(r"run: episode 1/100000, eval return -, \d+ s elapsed, ETA \d+ s", lines[1]), lines
    st = json.loads(status.read_text())
    assert st["state"] == "running" and st["pid"] == p.pid and st["heartbeat_unix"] <= time.time()
    assert effective_state(st) == "stale"  # the process is gone
    alive = dict(st, pid=os.getpid())
    assert effective_state(alive) == "running"
    assert effective_state(alive, now=st["heartbeat_unix"] + 61) == "stale"  # no heartbeat for a minute
    assert load(tmp_path / "run").runs["status"].tolist() == ["stale"]
    sweep = tmp_path / "sweep"
    (sweep / "runs").mkdir(parents=True)
    os.rename(tmp_path / "run", sweep / "runs" / "abc")
    assert run_states(sweep, ["abc", "def"]) == {"abc": "stale", "def": "pending"}


# ----------------------------------------------------------------------------- two launches of one run
def _claimed_by(run_dir: Path, pid: int, config_id: str) -> dict:
    """status.json as a live training process ``pid`` on this host writes it."""
    import socket

    run_dir.mkdir(parents=True, exist_ok=True)
    st = {"state": "running", "episodes_done": 3, "episodes": 8, "config_id": config_id, "pid": pid,
          "host": socket.gethostname(), "heartbeat": "now", "heartbeat_unix": time.time()}  # fmt: skip
    (run_dir / "status.json").write_text(json.dumps(st))
    return st


def test_a_run_another_live_process_trains_is_refused_and_untouched(tmp_path, capsys):
    """A second launch of a run that a live process trains (its status says running, with a fresh
    heartbeat and an existing pid) stops with one line and writes nothing; a stale claim (the
    process is gone) is resumed over."""
    from ccm_madrl.cli import main
    from ccm_madrl.experiment.runner import RunDirBusy

    cfg = build_config({**SMALL, "training": {**SMALL["training"], "episodes": 8}})
    rd = tmp_path / "run"
    st = _claimed_by(rd, os.getppid(), cfg.id())
    with pytest.raises(RunDirBusy, match=f"another process is training this run \\(pid {os.getppid()}"):
        Trainer(cfg, rd, progress=False, quiet=True).run()
    assert json.loads((rd / "status.json").read_text()) == st and sorted(p.name for p in rd.iterdir()) == [
        ".lock", "status.json"  # the lock file (rundir.dir_lock) holds no data
    ]
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["train", str(f), "--run-dir", str(rd), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another process is training this run" in err[0]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _claimed_by(rd, gone.pid, cfg.id())  # its process has exited: stale, so this launch trains it
    s = Trainer(cfg, rd, progress=False, quiet=True).run()
    assert (s.state, s.episodes_done) == ("done", 8)


def test_a_sweep_skips_the_runs_another_live_process_trains(tmp_path):
    from ccm_madrl.sweep import expand, load_sweep, run_sweep

    spec = {"name": "two", "base": {**SMALL, "training": {**SMALL["training"], "episodes": 6}},
            "axes": {"agent.actor_lr": [1e-4, 1e-3]}}  # fmt: skip
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(spec))
    runs = expand(*load_sweep(f), str(f))
    busy = runs[0]
    _claimed_by(tmp_path / "sw" / "runs" / busy.id, os.getppid(), busy.id)
    res = run_sweep(f, tmp_path / "sw", workers=1, progress=False)
    assert (res.total, res.done, res.failed, res.busy) == (2, 1, 0, 1)
    assert json.loads((tmp_path / "sw" / "runs" / busy.id / "status.json").read_text())["pid"] == os.getppid()


def test_a_pack_leaves_a_member_another_live_process_trains_to_it(tmp_path):
    from ccm_madrl.experiment.pack import run_pack_job

    cfgs = [
        build_config({**SMALL, "seed": s, "training": {**SMALL["training"], "episodes": 4}}) for s in (0, 1)
    ]
    dirs = [tmp_path / c.id() for c in cfgs]
    st = _claimed_by(dirs[1], os.getppid(), cfgs[1].id())
    res = run_pack_job([c.model_dump(mode="json") for c in cfgs], [str(d) for d in dirs], 0.0)["pack"]
    assert res[dirs[0].name]["status"] == "done" and res[dirs[1].name]["status"] == "queued"
    assert "busy" in res[dirs[1].name] and json.loads((dirs[1] / "status.json").read_text()) == st


def test_a_killed_but_unreaped_process_does_not_hold_its_run():
    """A training process that was killed but not yet reaped (a zombie: its orphaned worker under
    an init that does not reap) must not read as alive, or its run could never be resumed."""
    import socket

    from ccm_madrl.rundir import _zombie

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while not _zombie(p.pid) and time.time() < deadline:
        time.sleep(0.05)
    try:
        assert _zombie(p.pid)
        st = {"state": "running", "pid": p.pid, "host": socket.gethostname(), "heartbeat_unix": time.time()}
        assert effective_state(st) == "stale"
        assert effective_state({**st, "pid": os.getpid()}) == "running"
    finally:
        p.wait()


def test_a_sweep_job_waits_for_a_run_to_be_released_then_trains_it(tmp_path):
    """A job whose run is still held by an exiting process (a Ray task retried while its first
    worker dies) waits for the release; a run held by a live process past the wait is left to it."""
    from ccm_madrl.experiment.stop import StopToken
    from ccm_madrl.sweep import wait_released

    rd = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    _claimed_by(rd, p.pid, "x")
    t0 = time.monotonic()
    wait_released([str(rd)], StopToken(), timeout_s=30)
    assert 0.5 < time.monotonic() - t0 < 20  # released when that process exited
    p.wait()
    _claimed_by(rd, os.getppid(), "x")
    t0 = time.monotonic()
    wait_released([str(rd)], StopToken(), timeout_s=0.6)
    assert time.monotonic() - t0 < 5  # still held: given up after the timeout
