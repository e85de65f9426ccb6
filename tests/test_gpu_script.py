"""The GPU session's script (``benchmarks/gpu/pack_gpu.py``) runs on the CPU too, so that it is
ready when a session is lent a GPU: its agreement stage finds a pack on one device equal to the runs
alone, and its grid stage times a pack of a sweep and extrapolates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "pack_gpu.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(tmp_path, *args) -> dict:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(tmp_path), "--device", "cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((tmp_path / f"{args[0]}.json").read_text())


def test_agree_stage_on_the_cpu_finds_the_pack_equal_to_the_runs_alone(tmp_path):
    res = _run(tmp_path, "agree", "--episodes", "3", "--small-only")
    assert len(res["cases"]) == 8
    for case in res["cases"]:
        for key in ("pack_vs_alone_same_device", "device_pack_vs_cpu_alone"):
            c = case[key]
            assert c["episodes"] == 3 and c["eval_constraint_frac_equal_episodes"] == 3
            assert c["eval_return_max_rel_diff"] < 1e-6, (case["run"], key)
        assert case["device_alone_vs_cpu_alone"]["eval_return_max_rel_diff"] == 0.0  # the same program


def test_grid_stage_times_a_pack_of_a_sweep_and_extrapolates(tmp_path):
    res = _run(
        tmp_path, "grid", "--seeds", "1", "--set", "env.n_agents=6", "--set", "env.max_steps=3",
        "--set", "training.eval_episodes=1", "--set", "agent.batch_size=8",
        "--set", "agent.critic_hidden=[16, 8]", "--max-episodes", "8", "--profile", "5,5",
        "--seconds", "300",
    )  # fmt: skip
    assert res["runs"] == 16 and res["episodes_completed"] == 8 and res["runs_failed"] == 0
    assert len(res["pack_episode_s"]) == 8 and all(t > 0 for t in res["pack_episode_s"])
    med = res["steady_pack_episode_s_median"]
    measured = sum(t for i, t in enumerate(res["pack_episode_s"]) if i >= 3 and i != 5)
    assert res["extrapolated_grid_wall_min"] == pytest.approx((measured + (2000 - 4) * med) / 60)
    assert (tmp_path / "grid_profile_tottime.txt").read_text().count("function calls") == 1
