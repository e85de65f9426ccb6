"""Archives are transactions (#35 item 4), through the real ``ccm-madrl archive`` command: a
writer killed with SIGKILL leaves the archive as it was and the next run completes it; another
sweep's runs are refused unless ``--merge``; seed slices of one grid (separate sweep directories of
the same sweep file) add to one archive without a flag; a sweep without a finished run writes
nothing; a damaged Parquet file is named."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ccm_madrl.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
TINY = {
    "env": {"n_agents": 3, "max_steps": 2},
    "agent": {"batch_size": 4, "critic_hidden": [8, 8], "actor_hidden": [8, 8], "actor_update": "simultaneous"},
    "training": {"episodes": 3, "eval_episodes": 1, "tensorboard": False},
    "monitor": {"enabled": False},
}


def cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccm_madrl.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def one_error_line(p: subprocess.CompletedProcess, command: str = "archive") -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(f"ccm-madrl {command}: error: "), lines[0]
    return lines[0]


def sweep(d: Path, out: str, name: str = "grid", seeds="[0]", axis="[0.001]", base: dict | None = None) -> Path:
    f = d / f"{out}.yaml"
    f.write_text(yaml.safe_dump({"name": name, "base": base or TINY, "axes": {"agent.actor_lr": [0.001, 0.01]}}))
    run_sweep(f, d / out, workers=1, progress=False, seeds=seeds, axes=[f"agent.actor_lr={axis}"])
    return d / out


def tables(archive: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_parquet(p) for p in sorted(archive.glob("*.parquet"))}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    d = tmp_path_factory.mktemp("archive_tx")
    sweep(d, "a", seeds="[0, 1]")
    sweep(d, "a_slice", seeds="[2]", axis="[0.01]")  # another seed slice of the same grid
    sweep(d, "b", name="other", seeds="[5]")  # another sweep
    sweep(d, "a_longer", seeds="[3]", base={**TINY, "training": {**TINY["training"], "episodes": 4}})
    return d


def test_a_writer_killed_mid_write_leaves_the_archive_and_a_rerun_completes_it(sweeps, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "ccm_madrl.cli", "archive", str(sweeps / "a"), "--out", "arch"],
                         cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline:  # the run tables are written, the baselines are being computed
        if any((s / "runs.parquet").exists() for s in tmp_path.glob(".arch.new-*")):
            break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "arch").exists()  # nothing half-written where the archive goes
    first = cli(["archive", str(sweeps / "a"), "--out", "arch"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert not list(tmp_path.glob(".arch.*"))  # the killed writer's folder is gone
    got = tables(tmp_path / "arch")
    assert len(got["baselines.parquet"]) == 4 and len(got["runs.parquet"]) == 2  # 2 baselines x 2 seeds
    again = cli(["archive", str(sweeps / "a"), "--out", "arch"], tmp_path)
    assert again.returncode == 0 and "0 run(s) added" in again.stdout
    # an archive that lost a baseline (a writer of an earlier version killed before them) is completed
    b = got["baselines.parquet"]
    b.iloc[:2].to_parquet(tmp_path / "arch" / "baselines.parquet", index=False)
    third = cli(["archive", str(sweeps / "a"), "--out", "arch"], tmp_path)
    assert third.returncode == 0 and len(pd.read_parquet(tmp_path / "arch" / "baselines.parquet")) == 4


def test_another_sweep_is_refused_unless_merge(sweeps, tmp_path):
    assert cli(["archive", str(sweeps / "a"), "--out", "arch", "--no-baselines"], tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "arch").iterdir()}
    line = one_error_line(cli(["archive", str(sweeps / "b"), "--out", "arch", "--no-baselines"], tmp_path))
    assert "holds sweep 'grid'" in line and "is sweep 'other'" in line and "--merge" in line, line
    line = one_error_line(cli(["archive", str(sweeps / "a_longer"), "--out", "arch", "--no-baselines"], tmp_path))
    assert "another base config" in line and "--merge" in line, line
    assert {p.name: p.read_bytes() for p in (tmp_path / "arch").iterdir()} == before
    merged = cli(["archive", str(sweeps / "b"), "--out", "arch", "--no-baselines", "--merge"], tmp_path)
    assert merged.returncode == 0 and "1 run(s) added, 3 archived" in merged.stdout, merged.stdout
    index = json.loads((tmp_path / "arch" / "archive.json").read_text())
    assert index["sweep"] == "grid" and index["merged_sweeps"] == ["other"]  # not relabelled


def test_seed_slices_of_one_grid_add_to_one_archive_without_a_flag(sweeps, tmp_path):
    """The workflow of results/table1_s10: each seed slice (with its axis subset) is a sweep
    directory of its own, of the same sweep file; each is archived into one archive in turn."""
    assert cli(["archive", str(sweeps / "a"), "--out", "results/grid", "--no-baselines"], tmp_path).returncode == 0
    p = cli(["archive", str(sweeps / "a_slice"), "--out", "results/grid", "--no-baselines"], tmp_path)
    assert p.returncode == 0 and "1 run(s) added, 3 archived" in p.stdout, p.stdout + p.stderr
    assert sorted(pd.read_parquet(tmp_path / "results/grid/runs.parquet")["cfg.seed"]) == [0, 1, 2]
    report = cli(["report", "results/grid", "--out", "rep"], tmp_path)
    assert report.returncode == 0, report.stderr


def test_a_sweep_without_a_finished_run_writes_no_archive(sweeps, tmp_path):
    src = tmp_path / "unfinished"
    shutil.copytree(sweeps / "a", src)
    for st in src.glob("runs/*/status.json"):
        st.write_text(json.dumps({**json.loads(st.read_text()), "state": "interrupted"}))
    line = one_error_line(cli(["archive", str(src), "--out", "arch"], tmp_path))
    assert "has no finished run" in line, line
    assert not (tmp_path / "arch").exists() and not list(tmp_path.glob(".arch*"))


def test_damaged_parquet_files_are_named(sweeps, tmp_path):
    src = tmp_path / "damaged"
    shutil.copytree(sweeps / "a", src)
    m = next(src.glob("runs/*/metrics.parquet"))
    m.write_bytes(m.read_bytes()[:100])
    line = one_error_line(cli(["archive", str(src), "--out", "arch", "--no-baselines"], tmp_path))
    assert f"{m}: not a readable Parquet file" in line, line
    assert not (tmp_path / "arch").exists()
    assert cli(["archive", str(sweeps / "a"), "--out", "arch", "--no-baselines"], tmp_path).returncode == 0
    t = tmp_path / "arch" / "runs.parquet"
    t.write_bytes(b"PAR1 not really")
    line = one_error_line(cli(["report", "arch", "--out", "rep"], tmp_path), "report")
    assert "runs.parquet: not a readable Parquet file" in line, line
