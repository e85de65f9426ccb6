"""The master's selection: edge cases and the published rules."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ccm_madrl.agents.selection import explore_select, greedy_select, master_select, proposals_exceed


def no_q(envs, candidates):  # must not be called when the limits are not exceeded
    raise AssertionError("the critic was consulted although the proposals fit")


def u_of(u0):
    u = np.zeros((1, len(u0), 3))
    u[0, :, 0] = u0
    return u


def test_nobody_proposes():
    sel, exc = master_select(u_of([-0.5, -0.1, -1.0]), np.array([[10.0, 10, 10]]), 2, 400, no_q)
    assert sel.tolist() == [[0, 0, 0]] and not exc[0]


def test_all_fit_are_all_accepted_without_the_critic():
    sel, exc = master_select(u_of([0.5, -0.1, 0.0]), np.array([[10.0, 10, 10]]), 2, 400, no_q)
    assert sel.tolist() == [[1, 0, 1]] and not exc[0]  # u0 == 0 counts as a proposal


def test_count_limit_takes_best_q():
    u0 = [0.9, 0.8, 0.7, 0.6]
    q = lambda envs, c: np.where(c, np.array([[1.0, 4.0, 3.0, 2.0]]), -np.inf)  # noqa: E731
    sel, exc = master_select(u_of(u0), np.array([[1.0, 1, 1, 1]]), 2, 400, q)
    assert exc[0] and sel.tolist() == [[0, 1, 1, 0]]


def test_storage_bound_is_strict_and_greedy_skips_to_smaller_tasks():
    u0 = [0.9, 0.9, 0.9, 0.9]
    size = np.array([[250.0, 150.0, 100.0, 50.0]])
    q = lambda envs, c: np.where(c, np.array([[4.0, 3.0, 2.0, 1.0]]), -np.inf)  # noqa: E731
    # 250 accepted; 250+150 = 400 is not < 400: rejected; 100 accepted (350); 50 not < 400? 400: rejected
    sel, exc = master_select(u_of(u0), size, 10, 400, q)
    assert exc[0] and sel.tolist() == [[1, 0, 1, 0]]


def test_exact_storage_boundary_matches_the_published_sum():
    # total proposed size exactly S_E is not "exceeded" (published: sum > S_E)
    prop, exc = proposals_exceed(np.array([[0.1, 0.1]]), np.array([[150.0, 250.0]]), 10, 400)
    assert not exc[0] and prop.all()


def test_agents_with_zero_output_propose_but_are_ranked_last():
    """u0 == 0 proposes (>= 0) but gets no Q (> 0 required): it is visited after all ranked agents."""
    u0 = [0.0, 0.5, 0.6]
    q = lambda envs, c: np.where(c, np.array([[np.nan, 1.0, 2.0]]), -np.inf)  # noqa: E731
    sel, exc = master_select(u_of(u0), np.array([[10.0, 200.0, 250.0]]), 3, 400, q)
    # 460 > 400 exceeded; visit agent 2 (250, accepted), agent 1 (450 not < 400, rejected),
    # then the unranked agent 0 (260 < 400, accepted)
    assert exc[0] and sel.tolist() == [[1, 0, 1]]


def test_ties_follow_numpy_argsort_reversed():
    q = np.array([[1.0, 1.0, 1.0]])
    sel = greedy_select(q, np.array([[0.5, 0.5, 0.5]]), np.array([[1.0, 1, 1]]), 2, 400)
    expected_order = np.argsort(q[0])[::-1][:2]
    assert sorted(np.flatnonzero(sel[0])) == sorted(expected_order)


@pytest.mark.parametrize("stream", [random.Random(3), np.random.default_rng(3)])
def test_exploration_subset_respects_limits(stream):
    size = np.random.default_rng(0).uniform(1, 50, 50)
    for _ in range(200):
        sel = explore_select(size, 10, 100.0, stream)
        assert sel.sum() <= 10 and size[sel == 1].sum() <= 100.0


def test_exploration_uses_the_published_python_random_sequence():
    size = np.full(6, 150.0)
    r1, r2 = random.Random(7), random.Random(7)
    sel = explore_select(size, 3, 400.0, r1)
    agents = list(range(6))
    r2.shuffle(agents)
    chosen = r2.sample(agents, 3)
    chosen.remove(r2.choice(chosen))  # 450 > 400: one random member removed
    assert sorted(np.flatnonzero(sel)) == sorted(chosen)


def test_explore_coin_drawn_once_per_exceeded_env():
    u = np.zeros((3, 4, 3))
    u[..., 0] = 0.5
    size = np.array([[1.0] * 4, [1.0] * 4, [1.0] * 4])
    size[1] = 0.1
    coin = np.random.RandomState(0)
    q = lambda envs, c: np.where(c, 1.0, -np.inf)  # noqa: E731
    sel, exc = master_select(
        u, size, 3, 400, q, explore=True, epsilon=0.0, coin=coin, subset=random.Random(0)
    )
    assert exc.tolist() == [True, True, True]
    ref = np.random.RandomState(0)
    ref.rand(), ref.rand(), ref.rand()
    assert coin.rand() == ref.rand()
    assert (sel.sum(1) == 3).all()
