"""The device-resident path of the one engine (experiment/device.py, ``training.device_resident``):
on the CPU in float64 it reproduces today's host path, a pack and a run alone, in both RNG modes.

Measured (these configs, one torch thread, 4 episodes x 10 steps, 20 agents): the final weights, the
optimiser states, the replay (tree and transitions), the losses, Q, the selections (constraint
fractions) and the RNG streams are bit-identical; the returns (training and evaluation) differ by at
most 2.8e-16 relative, their standard deviations by as much relative to the returns (torch's ``log`` against NumPy's in the rewards, ``docs/device.md``), hence
RETURN_RTOL (also for the running reward statistics, float64, which the default ``reward_norm: none``
does not use). The rewards stored in the replay (float32) are identical.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ccm_madrl.config.experiment import ConfigError
from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.experiment import device as device_module
from ccm_madrl.experiment.pack import PackTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # exactness at one thread (conftest)

RETURN_RTOL = 1e-15  # measured: 2.8e-16 (float64 rewards: torch's log against NumPy's, 1 ulp)
RETURNS = ("train_return", "eval_return", "eval_return_std")
SMALL = {
    "env": {"n_agents": 20, "max_steps": 10},
    "agent": {"batch_size": 16, "critic_hidden": [64, 32]},
    "training": {"episodes": 4, "eval_episodes": 3, "checkpoint_every": 2, "tensorboard": False},
    "monitor": {"enabled": True},
}
LRS = [(1e-4, 1e-3), (1e-3, 1e-2), (1e-2, 1e-3)]


def configs(rng_mode: str, device_resident: str, runs: int = 3) -> list:
    out = []
    for seed, (a, c) in enumerate(LRS[:runs]):
        d = json.loads(json.dumps(SMALL))
        d["agent"].update(actor_lr=a, critic_lr=c)
        d["training"]["device_resident"] = device_resident
        d.update(seed=seed, rng_mode=rng_mode, name=f"r{seed}")
        out.append(build_config(d))
    return out


def assert_same_run(host_dir, device_dir) -> None:
    """Every metric equal (returns within RETURN_RTOL, the rest bit for bit, times aside), and the
    checkpoints' learner states and RNG streams bit-identical."""
    a, b = pd.read_parquet(host_dir / "metrics.parquet"), pd.read_parquet(device_dir / "metrics.parquet")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        if col.startswith("time_"):
            continue
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if col in RETURNS:  # relative to the returns (a std's error is the returns' error)
            scale = np.abs(a[col.removesuffix("_std")].to_numpy())
            assert np.array_equal(np.isnan(x), np.isnan(y)), col
            ok = ~np.isnan(x)
            assert np.all(np.abs(x[ok] - y[ok]) <= RETURN_RTOL * scale[ok]), (col, (x - y) / scale)
        else:
            np.testing.assert_array_equal(x, y, err_msg=col)
    ca = torch.load(host_dir / "checkpoint.pt", weights_only=False)
    cb = torch.load(device_dir / "checkpoint.pt", weights_only=False)
    assert ca["episodes_done"] == cb["episodes_done"]
    _assert_equal(ca["learner"], cb["learner"], "learner")
    assert repr(ca["rng"]) == repr(cb["rng"])  # the streams stand where the host path left them


def _assert_equal(x, y, where: str) -> None:
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _assert_equal(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y), where
    elif isinstance(x, np.ndarray):
        np.testing.assert_array_equal(x, y, err_msg=where)
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_equal(u, v, f"{where}[{i}]")
    elif ".reward_stats." in where and isinstance(x, float):  # the float64 rewards' statistics
        assert abs(x - y) <= RETURN_RTOL * abs(x), where
    else:
        assert x == y, where


@pytest.mark.parametrize("rng_mode", ["reference", "independent"])
def test_a_pack_on_the_device_path_reproduces_the_host_path(tmp_path, rng_mode, monkeypatch):
    """A pack of 3 runs (monitor on, a checkpoint every 2 episodes) on the device-resident path gives
    each run the runs of today's path; the speculated exceeded patterns were wrong in some episodes
    (passes > 1), so the redrawing of the host streams is part of what agrees."""
    passes = []
    make = device_module.DevicePath.make

    def spy(members, learner):
        path = make(members, learner)
        if path is not None:
            passes.append(path.passes)
        return path

    monkeypatch.setattr(device_module.DevicePath, "make", staticmethod(spy))
    host, dev = configs(rng_mode, "off"), configs(rng_mode, "on")
    PackTrainer(host, [tmp_path / "host" / c.name for c in host]).run()
    PackTrainer(dev, [tmp_path / "dev" / c.name for c in dev]).run()
    assert len(passes) == 1 and len(passes[0]) == 4 and max(passes[0]) > 1, passes
    for c in host:
        assert_same_run(tmp_path / "host" / c.name, tmp_path / "dev" / c.name)


def test_a_run_alone_takes_the_same_path(tmp_path):
    """R = 1 (``train``, the solo engine) goes through the same device-resident code."""
    (host,), (dev,) = configs("reference", "off", 1), configs("reference", "on", 1)
    Trainer(host, tmp_path / "host", progress=False, quiet=True).run()
    t = Trainer(dev, tmp_path / "dev", progress=False, quiet=True)
    t.run()
    assert t.engine.device_path is not None and len(t.engine.device_path.passes) == 4
    assert_same_run(tmp_path / "host", tmp_path / "dev")


def test_auto_is_the_host_path_on_a_cpu_and_on_is_refused_where_unsupported():
    cfg = build_config({})
    assert cfg.training.device_resident == "auto"
    assert not device_module.device_resident(cfg, torch.device("cpu"))
    assert device_module.device_resident(cfg, torch.device("cuda"))
    on = build_config({"training": {"device_resident": "on"}})
    assert device_module.device_resident(on, torch.device("cpu"))
    off = build_config({"training": {"device_resident": "off"}})
    assert not device_module.device_resident(off, torch.device("cuda"))
    assert build_config({"training": {"device_resident": "auto"}}).id() == cfg.id()  # id-neutral at default
    maddpg = build_config({"agent": {"algorithm": "maddpg"}})
    assert not device_module.device_resident(maddpg, torch.device("cuda"))  # auto: the host path
    with pytest.raises(ConfigError, match=r"training\.device_resident: 'on' needs agent\.algorithm ccm_madrl"):
        build_config({"agent": {"algorithm": "maddpg"}, "training": {"device_resident": "on"}})


def test_non_finite_actions_on_the_device_path_end_their_run_alone(tmp_path, monkeypatch):
    """A run whose actions stop being finite is given the all-local action on the device, marked
    diverged after the episode and dropped from its pack; the others go on to the end."""
    cfgs = configs("independent", "on")
    act = device_module.device_act

    def poisoned(learner, states, *args):
        u, sel, hybrid, exceeded = act(learner, states, *args)
        if args and learner.runs[1].rng.seed == 1 and learner.runs[1].replay_size >= 20:  # run r1, episode 2 on
            hybrid = hybrid.clone()
            hybrid[1, 0, 1] = float("nan")
        return u, sel, hybrid, exceeded

    monkeypatch.setattr(device_module, "device_act", poisoned)
    summaries = PackTrainer(cfgs, [tmp_path / c.name for c in cfgs]).run()
    assert [s.state for s in summaries] == ["done", "diverged", "done"]
    assert [s.episodes_done for s in summaries] == [4, 2, 4]
    status = json.loads((tmp_path / "r1" / "status.json").read_text())
    assert "actions not finite" in status["error"]


def test_the_prepared_gpu_script_runs_end_to_end_on_the_cpu(tmp_path):
    """benchmarks/gpu/device_grid.py with --device cpu, a small pack and a few episodes writes its JSON
    with the fields the GPU call reports (rewritten after every episode)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "grid.json"
    small = ["env.n_agents=12", "env.max_steps=4", "training.eval_episodes=2", "agent.batch_size=16"]
    args = [str(root / "benchmarks" / "gpu" / "device_grid.py"), "--device", "cpu", "--runs", "2"]
    args += ["--episodes", "3", "--out", str(out), *[x for s in small for x in ("--set", s)]]
    env = {"PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["runs"] == 2 and res["episodes_measured"] == 3 and len(res["passes"]) == 3
    assert res["run_episode_ms"] > 0 and res["grid_minutes_extrapolated"] > 0 and res["commit"]
    assert res["fp32_peak_fraction"] is None and res["gpu_memory_per_run_mib"] is None  # no GPU
    assert res["host_memory_per_run_mib"] > 0 and "training.device_resident=on" in res["overrides"]
