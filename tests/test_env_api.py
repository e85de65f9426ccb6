"""Bad input gets a clear ValueError naming the field; standard APIs pass their checkers."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

from ccm_madrl.mec import MECConfig, MECEnv, RunRNG
from ccm_madrl.mec.wrappers import MECJointEnv, MECParallelEnv


@pytest.fixture
def env():
    e = MECEnv(MECConfig(n_agents=5), num_envs=2)
    e.reset()
    return e


def ok_action(n=5, e=2):
    a = np.zeros((e, n, 3))
    a[..., 1:] = 0.5
    return a


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a[:, :4], r"action: expected shape \(2, 5, 3\)"),
        (lambda a: a[..., :2], r"action: expected shape"),
        (lambda a: np.where(np.arange(3) == 1, np.nan, a), r"non-finite value nan .* field 'alpha'"),
        (lambda a: np.where(np.arange(3) == 2, np.inf, a), r"non-finite value inf .* field 'rho'"),
        (lambda a: np.where(np.arange(3) == 0, 0.5, a), r"field 'x' must be 0 \(local\), 1 \(offload\) or 2"),
        (lambda a: np.where(np.arange(3) == 0, 3.0, a), r"field 'x'"),
        (lambda a: np.where(np.arange(3) == 1, 0.005, a), r"field 'alpha' must lie in \[0.01, 1\]"),
        (lambda a: np.where(np.arange(3) == 2, 1.5, a), r"field 'rho' must lie in \[0.01, 1\]"),
    ],
)
def test_bad_actions_are_rejected_with_the_field_named(env, mutate, match):
    with pytest.raises(ValueError, match=match):
        env.step(mutate(ok_action()))


def test_single_env_accepts_unbatched_action():
    e = MECEnv(MECConfig(n_agents=5), num_envs=1)
    e.reset()
    obs, r, done, _ = e.step(ok_action(5, 1)[0])
    assert obs.shape == (1, 5, 7) and r.shape == (1,)


def test_step_before_reset():
    with pytest.raises(RuntimeError, match="reset"):
        MECEnv(MECConfig(n_agents=5)).step(ok_action(5, 1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "H3"}, r"mode"),
        ({"n_agents": 0}, r"n_agents"),
        ({"min_size": 60.0}, r"min_size .* must not exceed max_size"),
        ({"min_ddl": 0.95}, r"min_ddl"),
        ({"k_channel": 0}, r"k_channel"),
        ({"unknown_field": 1}, r"unknown_field"),
    ],
)
def test_bad_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MECConfig(**kwargs)


def test_unknown_rng_mode():
    with pytest.raises(
        ValueError, match=r"rng_mode: unknown RNG mode 'global'; allowed: reference, independent"
    ):
        MECEnv(MECConfig(), rng_mode="global")
    with pytest.raises(ValueError, match="rng_mode"):
        RunRNG("global", 0, 37)


def test_pettingzoo_parallel_api():
    parallel_api_test(MECParallelEnv(MECConfig(n_agents=6)), num_cycles=25)


def test_gymnasium_env_checker():
    check_env(MECJointEnv(MECConfig(n_agents=6)), skip_render_check=True)


def test_wrappers_give_the_shared_reward_of_the_batched_env():
    cfg = MECConfig(n_agents=6)
    pz = MECParallelEnv(cfg)
    obs, _ = pz.reset(seed=3)
    core = MECEnv(cfg)
    np.testing.assert_array_equal(core.reset(seed=3)[0], np.stack([obs[a] for a in pz.possible_agents]))
    acts = {a: {"x": i % 3, "fractions": np.array([0.3, 0.7])} for i, a in enumerate(pz.possible_agents)}
    _, rewards, _, truncs, _ = pz.step(acts)
    hybrid = np.array([[i % 3, 0.3, 0.7] for i in range(6)], dtype=float)
    _, r, _, _ = core.step(hybrid)
    assert set(rewards.values()) == {float(r[0])} and not any(truncs.values())
