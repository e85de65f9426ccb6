"""Speed targets of the issues, measured (slow: run with ``pytest -m slow`` on a quiet machine).

The recorded numbers and the machine they were taken on live in ``benchmarks/``; these tests check
that the code still meets the targets where they are run.
"""

from __future__ import annotations

import pytest

from ccm_madrl.bench import bench_agent, bench_env

pytestmark = pytest.mark.slow


def test_batched_env_step_is_under_5_ms():
    res = bench_env(n_envs=50, n_agents=50, repeat=100)
    for r in res["results"]:
        assert r["batched_step_live_streams_ms"] < 5.0, r
        assert r["speedup_live_vs_loop"] > 1.0, r


def test_training_episode_targets():
    res = bench_agent(steps=(10,), episodes=12)
    by = {r["actor_update"]: r for r in res["results"]}
    assert by["simultaneous"]["episode_ms_median"] <= 90.0, by["simultaneous"]
    assert by["sequential"]["episode_ms_median"] <= 1000.0, by["sequential"]
    for r in by.values():  # the FLOP count is a real measurement of a real step
        assert 0 < r["fraction_of_matmul_peak"] < 1, r
