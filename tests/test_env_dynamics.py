"""Batched dynamics: invariants on random inputs, agreement with an independent per-agent loop
implementation, batch consistency, RNG semantics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccm_madrl.mec import MECConfig, MECEnv, record_episodes
from ccm_madrl.mec.dynamics import Devices, draw_devices, draw_tasks, step_dynamics
from ccm_madrl.mec.loop_reference import loop_step


def random_case(seed: int, n: int, e: int, mode: str, p_offload: float, p_punish: float):
    cfg = MECConfig(n_agents=n, mode=mode)
    rs = np.random.default_rng(seed)
    dev = draw_devices(cfg, rs)
    tasks = draw_tasks(cfg, rs, e)
    energy = rs.uniform(0.0, cfg.max_ene, (e, n))
    energy[rs.random((e, n)) < 0.1] = 1e-9  # some batteries nearly empty
    u = rs.random((e, n))
    x = np.where(u < p_punish, 2.0, np.where(u < p_punish + p_offload, 1.0, 0.0))
    action = np.stack([x, rs.uniform(0.01, 1, (e, n)), rs.uniform(0.01, 1, (e, n))], axis=-1)
    harvest = np.full((e, n), cfg.harvest_rate)
    return cfg, dev, energy, tasks, action, harvest


cases = st.tuples(
    st.integers(0, 2**31 - 1),
    st.integers(1, 60),
    st.integers(1, 4),
    st.sampled_from(["H2", "TOBM"]),
    st.floats(0, 1),
    st.floats(0, 0.5),
)


@settings(max_examples=60, deadline=None)
@given(cases)
def test_invariants(case):
    cfg, dev, energy, tasks, action, harvest = random_case(*case)
    out = step_dynamics(cfg, dev, energy, tasks, action, harvest)
    assert out.reward.shape == (action.shape[0],)
    np.testing.assert_allclose(out.reward, out.agent_reward.sum(-1))
    assert ((out.time >= 0) & (out.time <= 1)).all()  # capped, normalised times
    assert (out.time_penalty >= 0).all() and (out.energy_penalty >= 0).all()
    assert ((out.energy >= 0) & (out.energy <= cfg.max_ene)).all()
    assert (out.reward <= 0).all()  # costs only
    assert ((out.energy_penalty_frac >= 0) & (out.energy_penalty_frac <= 1)).all()
    # an empty battery is punished with the maximal time
    assert (out.time[out.energy <= 0] == 1.0).all()


@settings(max_examples=40, deadline=None)
@given(cases)
def test_h2_never_finishes_before_tobm(case):
    """Queueing on N_UNITS units can only delay an offloaded task relative to its own unit."""
    seed, n, e, _, p_off, p_pun = case
    cfg, dev, energy, tasks, action, harvest = random_case(seed, n, e, "H2", p_off, p_pun)
    h2 = step_dynamics(cfg, dev, energy, tasks, action, harvest)
    tobm = step_dynamics(cfg.model_copy(update={"mode": "TOBM"}), dev, energy, tasks, action, harvest)
    assert (h2.time >= tobm.time).all()
    assert (h2.reward <= tobm.reward + 1e-9 * np.abs(tobm.reward)).all()


@settings(max_examples=40, deadline=None)
@given(cases)
def test_batched_step_matches_per_agent_loop(case):
    cfg, dev, energy, tasks, action, harvest = random_case(*case)
    out = step_dynamics(cfg, dev, energy, tasks, action, harvest)
    for e in range(action.shape[0]):
        ref = loop_step(
            cfg,
            dev.power.tolist(),
            dev.gain.tolist(),
            dev.res.tolist(),
            energy[e].tolist(),
            tasks[e].tolist(),
            action[e].tolist(),
            harvest[e].tolist(),
        )
        for k in ("energy", "time", "energy_cost", "time_penalty", "energy_penalty", "agent_reward"):
            np.testing.assert_allclose(getattr(out, k)[e], ref[k], rtol=1e-12, atol=1e-15, err_msg=k)
        np.testing.assert_allclose(out.reward[e], ref["reward"], rtol=1e-12)
        assert out.time_penalty_frac[e] == ref["time_penalty_frac"]


def test_punishment_sets_offload_time_to_max_ddl():
    cfg = MECConfig(n_agents=3, mode="TOBM")
    dev = Devices(
        np.array([10.0, 10, 10]), np.array([2.0, 2, 2]), np.array([8.0, 8, 8]), np.array([1.0, 1, 1])
    )
    tasks = np.array([[[20.0, 500.0, 0.5]] * 3])
    a1 = np.array([[[1, 0.5, 0.5], [2, 0.5, 0.5], [0, 0.5, 0.5]]], dtype=float)
    out = step_dynamics(cfg, dev, np.full((1, 3), 2.0), tasks, a1, np.full((1, 3), cfg.harvest_rate))
    a_power = 10 ** ((10.0 - 30) / 10) * 0.5
    t_proc = 20 * 8 * 1024 * 500 / 4e9
    # punished agent: offload time is MAX_DDL, so its energy is A_power * MAX_DDL ...
    assert out.energy_cost[0, 1] == pytest.approx(a_power * cfg.max_ddl)
    # ... and its (capped) time is min(MAX_DDL + T_proc, MAX_DDL) = 1
    assert out.time[0, 1] == 1.0 and cfg.max_ddl + t_proc > cfg.max_ddl
    # the offloading agent without punishment finishes earlier
    assert out.time[0, 0] < 1.0


def test_h2_readding_quirk_on_a_crafted_case():
    """9 tasks offloaded on 8 units: the 9th waits for the least-loaded unit after every earlier
    task's processing time was added again (the published quirk), computed by hand here."""
    n = 9
    t_off = np.arange(1, n + 1) * 0.01  # distinct offload times, sorted by agent index
    t_proc = np.full(n, 0.02)
    from ccm_madrl.mec.dynamics import h2_finish_times

    fin = h2_finish_times(t_off[None], t_proc[None], np.ones((1, n)), 8)[0]
    np.testing.assert_allclose(fin[:8], t_off[:8] + t_proc[:8])
    unit = list(t_off[:8] + t_proc[:8])
    for _ in range(8):  # every earlier task adds its processing time to the current minimum
        unit[int(np.argmin(unit))] += 0.02
    start = max(t_off[8], min(unit))
    assert fin[8] == pytest.approx(start + 0.02)


def test_batch_of_envs_equals_envs_stepped_alone():
    cfg = MECConfig()
    seeds = [3, 4, 5]
    batch = MECEnv(cfg, len(seeds))
    obs_b = batch.reset(seed=seeds)
    singles = [MECEnv(cfg, 1) for _ in seeds]
    obs_s = [s.reset(seed=k) for s, k in zip(singles, seeds)]
    np.testing.assert_array_equal(obs_b, np.concatenate(obs_s))
    rs = np.random.default_rng(0)
    for _ in range(12):
        x = rs.integers(0, 3, (len(seeds), cfg.n_agents)).astype(float)
        a = np.stack([x, rs.uniform(0.01, 1, x.shape), rs.uniform(0.01, 1, x.shape)], -1)
        ob, rb, db, _ = batch.step(a)
        for i, s in enumerate(singles):
            o, r, d, _ = s.step(a[i])
            np.testing.assert_array_equal(ob[i], o[0])
            assert rb[i] == r[0] and db == d


@pytest.mark.parametrize("mode", ["reference", "independent"])
def test_seeded_reset_is_deterministic_and_table_replay_is_exact(mode):
    cfg = MECConfig(max_steps=5)
    env = MECEnv(cfg, 3, rng_mode=mode)
    table = record_episodes(cfg, mode, 37, [0, 1, 2])
    obs_live = env.reset(seed=[0, 1, 2])
    replay = MECEnv(cfg, 3, rng_mode=mode)
    obs_tab = replay.reset(table=table)
    np.testing.assert_array_equal(obs_live, obs_tab)
    a = np.zeros((3, cfg.n_agents, 3))
    a[..., 1:] = 0.5
    for _ in range(cfg.max_steps):
        o1, r1, _, _ = env.step(a)
        o2, r2, _, _ = replay.step(a)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
    with pytest.raises(RuntimeError, match="exhausted"):
        replay.step(a)


def test_reference_reseed_replays_published_global_stream():
    """reset(seed) re-seeds the shared legacy stream in place: draws after it are those of
    RandomState(seed)."""
    shared = np.random.RandomState(1)
    cfg = MECConfig(n_agents=4)
    env = MECEnv(cfg, 1, stream=shared, env_seed=37)
    env.reset(seed=9)
    expected = np.random.RandomState(9).random_sample((4, 3))
    np.testing.assert_array_equal(
        env.tasks[0, :, 0], cfg.min_size + (cfg.max_size - cfg.min_size) * expected[:, 0]
    )
    assert shared.random_sample() == np.random.RandomState(9).random_sample(12 + 1)[-1]
