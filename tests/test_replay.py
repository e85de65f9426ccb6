"""Prioritised replay: sampling frequencies follow priorities; weights and updates as specified."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ccm_madrl.agents.replay import PrioritizedReplay, SumTree


def make(capacity=16, n=10, alpha=0.6, eps=0.01):
    r = PrioritizedReplay(capacity, {"x": ()}, alpha=alpha, eps=eps)
    errors = np.arange(1, n + 1, dtype=float) ** 2
    r.add(errors, x=torch.arange(n, dtype=torch.float32))
    return r, errors


def test_tree_total_is_sum_of_leaf_priorities():
    r, errors = make()
    p = (np.abs(errors) + 0.01) ** 0.6
    assert r.tree.total() == pytest.approx(p.sum(), rel=1e-12)
    leaves = r.tree.tree[r.capacity - 1 : r.capacity - 1 + len(errors)]
    np.testing.assert_allclose(leaves, p)


@pytest.mark.parametrize("stream_kind", ["python", "numpy"])
def test_sampling_frequencies_match_priorities(stream_kind):
    """Chi-square goodness of fit of 20,000 draws against P(i) = p_i / sum p (10 bins, 9 dof):
    the 0.999 quantile of chi2(9) is 27.88."""
    r, errors = make()
    p = (errors + 0.01) ** 0.6
    expected_p = p / p.sum()
    stream = random.Random(0) if stream_kind == "python" else np.random.default_rng(0)
    counts = np.zeros(len(errors))
    for _ in range(625):
        batch, leaves, w = r.sample(32, stream)
        np.add.at(counts, batch["x"].long().numpy(), 1)
    exp = expected_p * counts.sum()
    chi2 = ((counts - exp) ** 2 / exp).sum()
    assert chi2 < 27.88, (counts, exp)


def test_importance_weights_formula_and_beta_schedule():
    r, errors = make()
    beta0 = r.beta
    batch, leaves, w = r.sample(8, random.Random(1))
    assert r.beta == pytest.approx(beta0 + 0.001)
    p = r.tree.tree[leaves]
    probs = (p + 1e-9) / (r.tree.total() + 1e-9)
    ref = (len(r) * probs) ** -r.beta
    np.testing.assert_allclose(w, ref / ref.max())
    assert w.max() == 1.0
    for _ in range(1000):
        r.sample(8, random.Random(1))
    assert r.beta == 1.0


def test_update_changes_priorities_and_duplicates_take_the_last():
    r, _ = make()
    leaf = r.capacity - 1 + 3
    r.update(np.array([leaf, leaf]), np.array([5.0, 100.0]))
    assert r.tree.tree[leaf] == pytest.approx((100.0 + 0.01) ** 0.6)
    leaves = r.tree.tree[r.capacity - 1 :]
    assert r.tree.total() == pytest.approx(leaves.sum(), rel=1e-12)


def test_ring_buffer_overwrites_oldest():
    r = PrioritizedReplay(4, {"x": ()})
    r.add(np.ones(6), x=torch.arange(6, dtype=torch.float32))
    assert len(r) == 4 and r.tree.write == 2
    assert sorted(r.data["x"].tolist()) == [2.0, 3.0, 4.0, 5.0]


def test_state_roundtrip():
    r, _ = make()
    r2 = PrioritizedReplay(16, {"x": ()})
    r2.load_state_dict(r.state_dict())
    a = r.sample(8, random.Random(5))
    b = r2.sample(8, random.Random(5))
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])


def test_bad_input():
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)
    r = PrioritizedReplay(4, {"x": ()})
    with pytest.raises(RuntimeError, match="empty"):
        r.sample(2, random.Random(0))
    with pytest.raises(ValueError, match="fields"):
        r.add(np.ones(1), y=torch.zeros(1))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_td_errors_are_refused_with_the_cause(bad):
    r = PrioritizedReplay(4, {"x": ()})
    with pytest.raises(FloatingPointError, match="critic has diverged"):
        r.add(np.array([1.0, bad]), x=torch.zeros(2))
    assert len(r) == 0  # nothing half-written
    r.add(np.array([1.0]), x=torch.zeros(1))
    with pytest.raises(FloatingPointError, match="not finite"):
        r.update(np.array([3]), np.array([bad]))
