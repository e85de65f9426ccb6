"""The torch environment (mec/torch_env.py) equals the NumPy environment: the golden file passes through
it (states bit-identical, rewards within 1e-12 relative), and R runs x E environments of random
episodes (both modes, both RNG modes, heavy offloading, episode ends, an episode cut short, re-seeded
and recorded episodes) match R NumPy environments of E, in float64."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ccm_madrl.agents.selection import master_select
from ccm_madrl.agents.selection_torch import greedy_master_select_torch
from ccm_madrl.mec import MECConfig, MECEnv, record_episodes
from ccm_madrl.mec.torch_env import TorchMECEnv

REWARD_RTOL = 1e-12


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _actions(rs: np.random.Generator, r: int, e: int, n: int, offload: float) -> np.ndarray:
    """Random hybrid actions (R, E, N, 3): x = 1 or 2 (punished) with probability ``offload``."""
    u = rs.random((r, e, n))
    x = np.where(u < offload / 2, 1.0, np.where(u < offload, 2.0, 0.0))
    return np.stack([x, rs.uniform(0.01, 1, (r, e, n)), rs.uniform(0.01, 1, (r, e, n))], axis=-1)


def test_golden_env_file_passes_through_the_torch_env(env_golden):
    with np.load(env_golden) as z:
        d = {k: z[k] for k in z.files}
    for mode in ("H2", "TOBM"):
        env = TorchMECEnv(MECConfig(mode=mode, n_agents=50, max_steps=10), env_seed=int(d["env_seed"]))
        for name in ("power", "initial_energy", "gain", "res"):
            assert np.array_equal(getattr(env.devices, name), d[f"{mode}_{name}"])
        states = [env.reset(seed=int(d["eval_seed"]))[0, 0].numpy()]
        rewards, dones, fracs = [], [], []
        for act in d[f"{mode}_actions"]:
            obs, rew, done, info = env.step(torch.from_numpy(act)[None, None])
            states.append(obs[0, 0].numpy())
            rewards.append(float(rew[0, 0]))
            dones.append(done)
            fracs.append([float(info["energy_penalty_frac"][0, 0]), float(info["time_penalty_frac"][0, 0])])
        assert np.array_equal(np.array(states), d[f"{mode}_states"]), mode  # bit-identical
        assert _rel(np.array(rewards), d[f"{mode}_rewards"][:, 0]) <= REWARD_RTOL
        assert dones == list(d[f"{mode}_dones"].astype(bool))
        golden_fracs = np.stack([d[f"{mode}_energy_penalty_frac"], d[f"{mode}_time_penalty_frac"]], axis=1)
        assert np.array_equal(np.array(fracs), golden_fracs)
        assert d[f"{mode}_actions"][..., 0].max() == 2  # the file exercises punished offloads


def _compare_step(tenv, nps, act, what):
    obs, rew, done, info = tenv.step(torch.from_numpy(act))
    outs = [env.step(act[r]) for r, env in enumerate(nps)]
    np_obs = np.stack([o[0] for o in outs])
    assert np.array_equal(obs.numpy(), np_obs), f"states differ: {what}"
    np_rew = np.stack([o[1] for o in outs])
    assert _rel(rew.numpy(), np_rew) <= REWARD_RTOL, what
    assert all(done == o[2] for o in outs), what
    for k in ("energy_penalty_frac", "time_penalty_frac"):
        assert np.array_equal(info[k].numpy(), np.stack([o[3][k] for o in outs])), (k, what)
    t = info["outcome"].time.numpy()
    np_t = np.stack([o[3]["outcome"].time for o in outs])
    assert np.max(np.abs(t - np_t)) <= 4e-16, f"times differ: {what}"  # log: 1 ulp on ~1 % of inputs
    return done


@pytest.mark.parametrize(
    "mode, rng_mode, runs, envs, n_agents, seed",
    [
        ("H2", "reference", 1, 1, 50, 0),
        ("H2", "reference", 3, 5, 20, 1),
        ("H2", "independent", 2, 7, 30, 2),
        ("TOBM", "reference", 2, 3, 12, 3),
        ("TOBM", "independent", 1, 4, 50, 4),
    ],
)
def test_random_batched_episodes_equal_the_numpy_env(
    mode, rng_mode, runs, envs, n_agents, seed, one_torch_thread
):
    cfg = MECConfig(mode=mode, n_agents=n_agents, max_steps=4)
    rs = np.random.default_rng(seed)
    tenv = TorchMECEnv(cfg, runs, envs, rng_mode, env_seed=37 + seed)
    nps = [MECEnv(cfg, envs, rng_mode, env_seed=37 + seed) for _ in range(runs)]
    tenv.reset()
    for env in nps:
        env.reset()
    dones = []
    for t in range(7):  # one episode end, then on into the next episode without a reset (the wrap)
        offload = (0.2, 0.6, 0.95)[t % 3]  # up to every agent offloading: the H2 queue's worst case
        dones.append(_compare_step(tenv, nps, _actions(rs, runs, envs, n_agents, offload), f"step {t}"))
    assert dones == [False, False, False, True, False, False, False]
    tenv.reset()  # an episode cut short: the streams must stand where the NumPy env's stand
    for env in nps:
        env.reset()
    _compare_step(tenv, nps, _actions(rs, runs, envs, n_agents, 0.7), "after a cut-short episode")
    seeds = rs.integers(0, 1000, envs)
    tenv.reset(seed=seeds)
    for env in nps:
        env.reset(seed=list(seeds))
    for t in range(4):
        _compare_step(tenv, nps, _actions(rs, runs, envs, n_agents, 0.8), f"re-seeded, step {t}")


def test_recorded_tables_replay_as_in_the_numpy_env(one_torch_thread):
    cfg = MECConfig(n_agents=16, max_steps=3)
    rs = np.random.default_rng(9)
    table = record_episodes(cfg, "reference", 37, range(6))
    tenv = TorchMECEnv(cfg, 2, 6)
    nps = [MECEnv(cfg, 6) for _ in range(2)]
    for _ in range(2):  # the table is copied once and replayed again
        tenv.reset(table=table)
        for env in nps:
            env.reset(table=table)
        for t in range(3):
            _compare_step(tenv, nps, _actions(rs, 2, 6, 16, 0.9), f"table step {t}")
        with pytest.raises(RuntimeError, match="exhausted"):
            tenv.step(torch.from_numpy(_actions(rs, 2, 6, 16, 0.5)))
    with pytest.raises(ValueError, match="replays a table"):
        tenv.reset()


def test_queue_bounds_agree_and_an_exceeded_bound_is_raised(one_torch_thread):
    cfg = MECConfig(n_agents=30, max_steps=3)
    rs = np.random.default_rng(5)
    acts = [_actions(rs, 1, 40, 30, 0.5) for _ in range(3)]
    results = {}
    for bound in (None, "batch", 30):
        env = TorchMECEnv(cfg, 1, 40, queue_bound=bound)
        env.reset()
        results[bound] = [env.step(torch.from_numpy(a))[1].numpy() for a in acts]
        env.reset()  # nothing flagged
    for bound in ("batch", 30):
        assert all(np.array_equal(a, b) for a, b in zip(results[bound], results[None]))
    # a master's actions: at most 10 offloads per environment, so bound 10 is exact and never flagged
    limited = np.zeros((1, 40, 30, 3))
    limited[..., 1:] = 0.5
    for e in range(40):
        limited[0, e, rs.choice(30, 10, replace=False), 0] = 1.0
    full, bounded = TorchMECEnv(cfg, 1, 40), TorchMECEnv(cfg, 1, 40, queue_bound=10)
    full.reset(), bounded.reset()
    assert torch.equal(full.step(torch.from_numpy(limited))[1], bounded.step(torch.from_numpy(limited))[1])
    bounded.check()
    everyone = limited.copy()
    everyone[..., 0] = 1.0  # all 30 offload, most with an offload time below MAX_DDL: beyond the bound
    bounded.step(torch.from_numpy(everyone))
    with pytest.raises(ValueError, match="more offloaded tasks than queue_bound"):
        bounded.reset()
    with pytest.raises(ValueError, match="queue_bound"):
        TorchMECEnv(cfg, queue_bound=0)


def test_invalid_actions_are_flagged_and_shapes_checked():
    cfg = MECConfig(n_agents=5, max_steps=3)
    env = TorchMECEnv(cfg, 2, 3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(2, 3, 5, 3))
    env.reset()
    a = torch.full((2, 3, 5, 3), 0.5)
    a[..., 0] = 0
    env.step(a)
    env.check()  # valid: nothing raised
    a[1, 2, 4, 0] = 3
    env.step(a)
    with pytest.raises(ValueError, match="x is not 0, 1 or 2"):
        env.check()
    a[1, 2, 4, 0] = 1
    a[0, 0, 0, 2] = float("nan")
    env.step(a)
    with pytest.raises(ValueError, match="fraction"):
        env.reset()
    with pytest.raises(ValueError, match=r"expected shape \(2, 3, 5, 3\)"):
        env.step(torch.zeros(3, 5, 3))


def test_float32_differs_from_float64_by_what_the_docs_state(one_torch_thread):
    """float32 against the float64 NumPy env, 64 environments x 50 agents, 10 steps of heavy
    offloading (measured on the development machine: rewards 6.9e-07 max relative, batteries
    3.2e-07 max relative; the bounds below leave a factor ~15). A battery update (~1e-7 J) is near
    float32's resolution at ~2 J, so batteries drift; docs/device.md states the same numbers."""
    cfg = MECConfig(n_agents=50, max_steps=10)
    rs = np.random.default_rng(11)
    t32 = TorchMECEnv(cfg, 1, 64, dtype=torch.float32)
    ref = MECEnv(cfg, 64)
    t32.reset(), ref.reset()
    rew_err = energy_err = 0.0
    for _ in range(10):
        act = _actions(rs, 1, 64, 50, 0.6)
        obs, rew, _, _ = t32.step(torch.from_numpy(act))
        o, r, _, _ = ref.step(act[0])
        assert obs.dtype == torch.float32
        rew_err = max(rew_err, _rel(rew.double().numpy()[0], r))
        energy_err = max(energy_err, _rel(obs.double().numpy()[0, ..., 2], o[..., 2]))
    assert 0 < rew_err < 1e-5 and 0 < energy_err < 5e-6, (rew_err, energy_err)


def test_the_step_timing_script_runs_on_the_cpu(tmp_path):
    """benchmarks/gpu/torch_env_step.py end to end on the CPU (small), as it will run with --device cuda."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "step.json"
    env = {"PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    args = ["--device", "cpu", "--envs", "16", "--repeats", "1", "--out", str(out)]
    script = root / "benchmarks" / "gpu" / "torch_env_step.py"
    r = subprocess.run(
        [sys.executable, str(script), *args], cwd=root, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["envs"] == 16 and res["commit"]["commit"]
    assert "--envs 16" in res["command"] and res["machine"]["cpu"]
    assert [p["profile"] for p in res["results"]] == ["master", "random"]
    for p in res["results"]:
        assert p["step_ms_median"]["numpy"] > 0 and len(p["step_ms_median"]) >= 2


def test_greedy_master_selection_in_torch_equals_the_numpy_selection():
    """agents/selection_torch.py against agents/selection.master_select (explore=False), 400
    environments x 50 agents, half of them over the limits (count or storage)."""
    rs = np.random.default_rng(3)
    e, n, limit, s_e = 400, 50, 10, 400.0
    u = rs.uniform(-1, 1, (e, n, 3))
    u[: e // 2, :, 0] -= 0.6  # fewer proposers: some environments within the limits
    size = rs.uniform(1, 50, (e, n))
    q = np.where(u[..., 0] > 0, rs.standard_normal((e, n)), -np.inf)
    want, want_exc = master_select(u, size, limit, s_e, lambda envs, cand: q[envs])
    got, exc, near = greedy_master_select_torch(
        torch.from_numpy(u), torch.from_numpy(size), torch.from_numpy(q), limit, s_e
    )
    assert not near.any()
    assert np.array_equal(exc.numpy(), want_exc) and 0 < want_exc.sum() < e
    assert np.array_equal(got.numpy(), want)
    assert (want.sum(axis=1)[want_exc] <= limit).all() and (want.sum(axis=1)[want_exc] > 0).all()
