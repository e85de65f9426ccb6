"""One owner per directory (#35 item 5): a run directory and a sweep directory are locked
(``flock`` on ``.lock``) by the process that writes them, for its whole life; a second process is
refused at once with one line naming the holder's pid and host (exit 2), and a crashed holder
(SIGKILL) releases the lock with its death. Every case runs the real command in real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
TINY = {
    "env": {"n_agents": 3, "max_steps": 2},
    "agent": {
        "batch_size": 4,
        "critic_hidden": [8, 8],
        "actor_hidden": [8, 8],
        "actor_update": "simultaneous",
    },
    "training": {"episodes": 100000, "eval_episodes": 1, "tensorboard": False, "checkpoint_every": 50},
    "monitor": {"enabled": False},
}


def cli(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "ccm_madrl.cli", *args]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cli(*args, cwd=cwd), cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli(*args, cwd=cwd), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def wait_for(pred, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def held_by(lock: Path, pid: int) -> bool:
    try:
        return json.loads(lock.read_text()).get("pid") == pid
    except (OSError, ValueError):
        return False


def running(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "status.json").read_text()).get("state") == "running"
    except (OSError, ValueError):
        return False


def one_error_line(p: subprocess.CompletedProcess, command: str) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(f"ccm-madrl {command}: error: "), lines[0]
    return lines[0]


def test_a_second_train_of_one_run_dir_exits_2_naming_the_holder(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    rd = tmp_path / "run"
    first = start(["train", "tiny.yaml", "--run-dir", "run", "--no-progress"], tmp_path)
    try:
        wait_for(lambda: held_by(rd / ".lock", first.pid) and running(rd))
        status = (rd / "status.json").read_text()
        p = run(["train", "tiny.yaml", "--run-dir", "run", "--no-progress"], tmp_path)
        line = one_error_line(p, "train")
        assert f"in use by pid {first.pid} on host {socket.gethostname()}" in line, line
        assert first.poll() is None  # the first goes on
        assert json.loads((rd / "status.json").read_text())["pid"] == first.pid != json.loads(status).get("x")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert first.returncode == 130 and json.loads((rd / "status.json").read_text())["state"] == "interrupted"


def test_a_holder_killed_with_sigkill_releases_its_run_dir(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    rd = tmp_path / "run"
    first = start(["train", "tiny.yaml", "--run-dir", "run", "--no-progress"], tmp_path)
    wait_for(lambda: held_by(rd / ".lock", first.pid) and running(rd))
    first.kill()
    first.wait(30)
    second = start(["train", "tiny.yaml", "--run-dir", "run", "--no-progress"], tmp_path)
    try:  # the lock died with its holder: the second takes it and trains (status: running, its pid)
        wait_for(
            lambda: (
                held_by(rd / ".lock", second.pid)
                and json.loads((rd / "status.json").read_text())["pid"] == second.pid
            )
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert second.returncode == 130


def sweep_file(d: Path, **extra) -> Path:
    f = d / "s.yaml"
    f.write_text(
        yaml.safe_dump({"name": "own", "base": TINY, "axes": {"agent.actor_lr": [0.001, 0.01]}, **extra})
    )
    return f


def test_a_second_sweep_of_one_out_exits_2_naming_the_holder(tmp_path):
    sweep_file(tmp_path)
    out = tmp_path / "out"
    first = start(["sweep", "s.yaml", "--out", "out", "--workers", "1", "--no-progress"], tmp_path)
    try:
        wait_for(lambda: held_by(out / ".lock", first.pid) and any(running(r) for r in out.glob("runs/*")))
        manifest = (out / "manifest.json").read_text()
        p = run(["sweep", "s.yaml", "--out", "out", "--workers", "1", "--no-progress"], tmp_path)
        line = one_error_line(p, "sweep")
        assert f"sweep directory out: in use by pid {first.pid} on host {socket.gethostname()}" in line, line
        assert first.poll() is None and (out / "manifest.json").read_text() == manifest
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(120)
    assert first.returncode == 130


def test_a_sweep_with_another_plan_into_an_existing_out_is_refused_unless_extend(tmp_path):
    sweep_file(tmp_path)
    base = dict(TINY, training={**TINY["training"], "episodes": 2})
    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump({"name": "own", "base": base, "axes": {"agent.actor_lr": [0.001, 0.01]}})
    )
    assert run(["sweep", "s.yaml", "--out", "out", "--no-progress"], tmp_path).returncode == 0
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    again = run(["sweep", "s.yaml", "--out", "out", "--no-progress"], tmp_path)  # the same plan: resumes
    assert again.returncode == 0 and "2/2 runs done (2 already finished)" in again.stdout
    p = run(["sweep", "s.yaml", "--seeds", "2", "--out", "out", "--no-progress"], tmp_path)
    line = one_error_line(p, "sweep")
    assert "holds another plan" in line and "--extend" in line, line
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert (
        after["sweep.yaml"] == before["sweep.yaml"] and len(json.loads(after["manifest.json"])["runs"]) == 2
    )
    p = run(["sweep", "s.yaml", "--seeds", "2", "--out", "out", "--no-progress", "--extend"], tmp_path)
    assert p.returncode == 0 and "4/4 runs done (2 already finished)" in p.stdout, p.stdout + p.stderr
    assert (out / "sweep.1.yaml").read_bytes() == before["sweep.yaml"]
    assert len(json.loads((out / "manifest.json").read_text())["runs"]) == 4
