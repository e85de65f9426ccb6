"""Failures stay local (#35 item 6), through the real command line: a pack member that cannot
start (unusable checkpoints) fails alone while the rest of its pack trains, and resumes from
scratch on the next run; a full disk at the start (``RLIMIT_FSIZE``: the kernel's "file too large")
is one line, exit 2, leaves no config behind, and the same command then runs; an empty
``config.yaml`` left by an earlier version's failed start is redone."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import yaml

from ccm_madrl.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
TINY = {
    "env": {"n_agents": 3, "max_steps": 2},
    "agent": {"batch_size": 4, "critic_hidden": [8, 8], "actor_hidden": [8, 8], "actor_update": "simultaneous"},
    "training": {"episodes": 3, "eval_episodes": 1, "tensorboard": False},
    "monitor": {"enabled": False},
}


def cli(args: list[str], cwd: Path, fsize: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "ccm_madrl.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)  # fmt: skip


def test_a_pack_member_with_unusable_checkpoints_fails_alone(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"name": "pk", "base": TINY, "seeds": 2}))
    bad = expand(*load_sweep(f))[0]
    rd = tmp_path / "out" / "runs" / bad.id
    rd.mkdir(parents=True)
    (rd / "config.yaml").write_text(bad.config.to_yaml())
    (rd / "checkpoint.pt").write_bytes(b"truncated by a full disk")
    (rd / "checkpoint.prev.pt").write_bytes(b"")
    p = cli(["sweep", "s.yaml", "--out", "out", "--pack", "2", "--no-progress"], tmp_path)
    assert p.returncode == 1 and "1/2 runs done" in p.stdout and "1 failed" in p.stdout, p.stdout + p.stderr
    man = {e["id"]: e for e in json.loads((tmp_path / "out" / "manifest.json").read_text())["runs"]}
    assert man[bad.id]["status"] == "failed" and "no usable checkpoint" in man[bad.id]["error"]
    other = next(r for r in man if r != bad.id)
    assert man[other]["status"] == "done" and man[other]["episodes_done"] == 3
    # the bad checkpoints are set aside: the next run of the same command starts that run afresh
    again = cli(["sweep", "s.yaml", "--out", "out", "--pack", "2", "--no-progress"], tmp_path)
    assert again.returncode == 0 and "2/2 runs done (1 already finished), 0 failed" in again.stdout, again.stdout
    assert sorted(q.name for q in rd.glob("*.damaged")) == ["checkpoint.prev.pt.damaged", "checkpoint.pt.damaged"]


def test_a_full_disk_at_the_start_leaves_no_config_and_the_command_then_runs(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    args = ["train", "tiny.yaml", "--run-dir", "run", "--no-progress"]
    p = cli(args, tmp_path, fsize=1000)  # config.yaml (~3 KB) cannot be written
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "File too large" in lines[0], p.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert not [q for q in (tmp_path / "run").iterdir() if q.name != ".lock"]
    ok = cli(args, tmp_path)
    assert ok.returncode == 0 and "done" in ok.stdout, ok.stdout + ok.stderr


def test_an_empty_config_left_by_a_failed_start_is_redone(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("")
    ok = cli(["train", "tiny.yaml", "--run-dir", "run", "--no-progress"], tmp_path)
    assert ok.returncode == 0 and "done" in ok.stdout, ok.stdout + ok.stderr
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["env"]["n_agents"] == 3
