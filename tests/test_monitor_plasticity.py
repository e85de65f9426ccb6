"""The monitor's plasticity measures: analytic values (features of known rank and spectrum, known
activations, a known weight update), a batched ensemble's per-agent values against each agent alone,
the rank interval, and the columns in a run's compacted monitor tables (old tables still load)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ccm_madrl.agents.networks import BatchedActor
from ccm_madrl.agents.optim import BatchedOptimizer
from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.monitor import GradientFlowMonitor, compact, core, plasticity
from ccm_madrl.monitor.integration import read_agents
from ccm_madrl.store import Store

FEATURE_KEYS = (*plasticity.FEATURES, *plasticity.RANKS)


def with_spectrum(rows: int, cols: int, s, seed: int = 0) -> torch.Tensor:
    """A (rows, cols) float64 matrix U diag(s) V^T with orthonormal U, V: singular values s."""
    g = torch.Generator().manual_seed(seed)
    k = len(s)
    u, _ = torch.linalg.qr(torch.randn(rows, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, k, generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T


def entropy_rank(s) -> float:
    p = np.asarray(s, dtype=float) / np.sum(s)
    return float(np.exp(-np.sum(p * np.log(p))))


def ranks_of(x: torch.Tensor) -> dict[str, float]:
    valid = torch.ones(1, x.shape[0], dtype=torch.bool)
    return {k: float(v[0]) for k, v in plasticity.ranks(x.unsqueeze(0), valid).items()}


def test_a_rank_3_matrix_has_stable_rank_3_and_the_entropy_effective_rank():
    x = with_spectrum(64, 16, [3.0, 2.0, 1.0])
    assert torch.linalg.matrix_rank(x) == 3
    r = ranks_of(x)
    assert r["stable_rank"] == 3  # cumulative shares 1/2, 5/6, 1
    assert r["effective_rank"] == pytest.approx(entropy_rank([3, 2, 1]), rel=1e-5)  # exp H(1/2, 1/3, 1/6)
    # equal singular values: both ranks are the rank
    r = ranks_of(with_spectrum(64, 16, [2.0, 2.0, 2.0]))
    assert r["stable_rank"] == 3 and r["effective_rank"] == pytest.approx(3.0, rel=1e-5)


def test_a_known_spectrum_gives_the_srank_of_its_cumulative_sums():
    s = [60.0, 25.0, 10.0, 4.5, 0.5]  # cumulative shares 0.6, 0.85, 0.95, 0.995, 1
    x = with_spectrum(100, 32, s, seed=1)
    r = ranks_of(x)
    assert r["stable_rank"] == 4  # the first k reaching 1 - 0.01
    assert r["effective_rank"] == pytest.approx(entropy_rank(s), rel=1e-5)
    sv = torch.tensor([s], dtype=torch.float64)
    assert float(plasticity.stable_rank(sv, delta=0.1)[0]) == 3 and float(plasticity.stable_rank(sv, 0.3)[0]) == 2
    # a zero matrix (every unit dead) has rank 0 by both measures
    z = ranks_of(torch.zeros(8, 4))
    assert z == {"stable_rank": 0.0, "effective_rank": 0.0}


def test_feature_statistics_of_known_relu_and_tanh_features():
    h = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [3.0, 4.0]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    st = {k: float(v[0]) for k, v in plasticity.feature_stats(h, valid, "relu").items()}
    assert st["active_units"] == pytest.approx(3 / 6)
    assert st["feature_norm"] == pytest.approx((1 + 0 + 5) / 3)
    # per-unit population variances over the samples: 14/9 and 32/9
    assert st["feature_variance"] == pytest.approx((14 / 9 + 32 / 9) / 2)
    # tanh units with |h| > 0.99 are saturated, not active: tanh(3) = 0.995
    t = torch.tanh(torch.tensor([[[0.0, 3.0], [-3.0, 0.5]]]))
    st = plasticity.feature_stats(t, torch.ones(1, 2, dtype=torch.bool), "bounded")
    assert float(st["active_units"][0]) == pytest.approx(0.5)
    sig = torch.sigmoid(torch.tensor([[[0.0, 6.0, -6.0, 1.0]]]))  # sigmoid(+-6): 0.9975 / 0.0025
    st = plasticity.feature_stats(sig, torch.ones(1, 1, dtype=torch.bool), "sigmoid")
    assert float(st["active_units"][0]) == pytest.approx(0.5)


def test_padding_rows_are_not_counted():
    """An agent's rows padded by copies of its first row (a pack's critic) measure as its rows alone."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 5, generator=g)
    x[1, 3:] = x[1, 0]  # agent 1 has 3 rows, padded to 6
    pad = plasticity.padding_rows(x)
    assert pad.tolist() == [[False] * 6, [False] * 3 + [True] * 3]
    h = x.relu()
    both = plasticity.feature_stats(h, ~pad, "relu") | plasticity.ranks(h, ~pad)
    alone = plasticity.feature_stats(h[1:, :3], torch.ones(1, 3, dtype=torch.bool), "relu")
    alone |= plasticity.ranks(h[1:, :3], torch.ones(1, 3, dtype=torch.bool))
    for k, v in alone.items():
        assert float(both[k][1]) == pytest.approx(float(v[0]), rel=1e-6), k


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 2), nn.Tanh())


def test_the_rows_hold_the_measures_of_the_training_batch_and_the_known_weight_distance():
    net = mlp()
    init = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    mon = GradientFlowMonitor().attach("actor", net, optimizer=opt)
    assert list(mon.roles["actor"].features) == ["1", "3"]  # the hidden activations; "5" is the output
    s = torch.randn(32, 4)
    with torch.no_grad():  # the features of the training pass, before the step
        h1 = net[1](net[0](s))
        h3 = net[3](net[2](h1))
    mon.start_episode(0)
    opt.zero_grad()
    net(s).pow(2).sum().backward()
    opt.step()
    (row,) = mon.end_episode(0)
    for name, h, active in (("1", h1, (h1 > 0).double().mean()), ("3", h3, (h3.abs() <= 0.99).double().mean())):
        sv = np.linalg.svd(h.double().numpy(), compute_uv=False)
        cum = np.cumsum(sv) / sv.sum()
        assert row[f"stable_rank.{name}"] == int(np.sum(cum < 0.99)) + 1
        assert row[f"effective_rank.{name}"] == pytest.approx(entropy_rank(sv[sv > 0]), rel=1e-4)
        assert row[f"active_units.{name}"] == pytest.approx(float(active))
        assert row[f"feature_norm.{name}"] == pytest.approx(float(h.double().norm(dim=1).mean()), rel=1e-6)
        var = float(h.double().var(0, unbiased=False).mean())
        assert row[f"feature_variance.{name}"] == pytest.approx(var, rel=1e-6)
    # weights: after the SGD step, a known change of every weight and bias of layer "0" by +0.5 in each
    # of two episodes: the distance is from the initial weights, the update from the episode's start
    stepped = [p.detach().clone() for p in net.parameters()]
    for ep in (1, 2):
        mon.start_episode(ep)
        with torch.no_grad():
            net[0].weight += 0.5
            net[0].bias += 0.5
        (row,) = mon.end_episode(ep)
    n0, n2, n = 4 * 16 + 16, 16 * 8 + 8, sum(p.numel() for p in net.parameters())
    dist0 = sum(float((q - p0 + 1.0).pow(2).sum()) for q, p0 in zip(stepped[:2], init[:2]))
    assert row["weight_difference.0"] == pytest.approx(math.sqrt(dist0 / n0), rel=1e-6)
    dist2 = sum(float((q - p0).pow(2).sum()) for q, p0 in zip(stepped[2:4], init[2:4]))
    assert dist2 > 0 and row["weight_difference.2"] == pytest.approx(math.sqrt(dist2 / n2), rel=1e-6)
    assert row["update_l2.0"] == pytest.approx(0.5 * math.sqrt(n0), rel=1e-5)  # this episode's change only
    assert row["weight_magnitude.0"] == pytest.approx(
        math.sqrt(float(sum(p.detach().pow(2).sum() for p in net[0].parameters())) / n0), rel=1e-6
    )
    total = math.sqrt(float(sum(p.detach().pow(2).sum() for p in net.parameters())) / n)
    assert row["weight_magnitude"] == pytest.approx(total, rel=1e-6)


def test_a_known_update_from_the_initial_weights():
    """No optimiser step: the distance from the weights at attach is exactly the change made."""
    net = mlp(1)
    mon = GradientFlowMonitor().attach("critic", net, output=None)
    mon.start_episode(0)
    with torch.no_grad():
        net[4].weight += 0.25
    (row,) = mon.end_episode(0)
    n4 = 8 * 2 + 2
    assert row["weight_difference.4"] == pytest.approx(0.25 * math.sqrt(16 / n4), rel=1e-6)  # bias unchanged
    assert row["weight_difference.0"] == 0.0 and row["weight_difference.2"] == 0.0
    assert all(math.isnan(row[f"{k}.1"]) for k in FEATURE_KEYS)  # no training pass: no features


def alone_copy(actors: BatchedActor, i: int) -> nn.Sequential:
    net = nn.Sequential(
        nn.Linear(actors.state_dim, actors.hidden[0]),
        nn.ReLU(),
        nn.Linear(actors.hidden[0], actors.hidden[1]),
        nn.ReLU(),
        nn.Linear(actors.hidden[1], actors.action_dim),
        nn.Tanh(),
    )
    with torch.no_grad():
        for dst, src in zip((net[0], net[2], net[4]), (actors.fc1, actors.fc2, actors.fc3)):
            dst.weight.copy_(src.weight[i])
            dst.bias.copy_(src.bias[i])
    return net


@pytest.mark.parametrize("sequential", [False, True])
def test_per_agent_values_of_a_batched_ensemble_equal_each_agent_alone(sequential):
    torch.manual_seed(4)
    n = 4
    actors = BatchedActor(n, state_dim=5, action_dim=2, hidden=(12, 6))
    alone = [alone_copy(actors, i) for i in range(n)]
    s = torch.randn(40, n, 5)
    opt = BatchedOptimizer(list(actors.parameters()), "sgd", lr=0.05)
    mon = GradientFlowMonitor().attach("actors", actors, optimizer=opt, per_agent=True)
    mon.start_episode(0)
    for agent in range(n) if sequential else [None]:
        grads = torch.autograd.grad(actors(s).pow(2).sum(), list(actors.parameters()))
        opt.step(grads, agent=agent)
    rows = {r["agent"]: r for r in mon.end_episode(0)}
    names = {"act1": "1", "act2": "3", "fc1": "0", "fc2": "2", "fc3": "4"}
    for i, net in enumerate(alone):
        o = torch.optim.SGD(net.parameters(), lr=0.05)
        m = GradientFlowMonitor().attach("actor", net, optimizer=o)
        m.start_episode(0)
        o.zero_grad()
        net(s[:, i]).pow(2).sum().backward()
        o.step()
        (ref,) = m.end_episode(0)
        for ours, theirs in names.items():
            keys = FEATURE_KEYS if ours.startswith("act") else ("weight_magnitude", "weight_difference")
            for k in keys:
                assert rows[i][f"{k}.{ours}"] == pytest.approx(ref[f"{k}.{theirs}"], rel=1e-5, abs=1e-7), (i, k, ours)
        assert rows[i]["weight_difference"] == pytest.approx(ref["weight_difference"], rel=1e-5)
        assert rows[i]["weight_difference"] > 0


def test_ranks_on_every_k_th_measured_episode():
    net = mlp(2)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    mon = GradientFlowMonitor(interval=2, rank_interval=2).attach("actor", net, optimizer=opt)
    got = {}
    for ep in range(9):
        if not mon.start_episode(ep):
            assert mon.end_episode(ep) is None
            continue
        opt.zero_grad()
        net(torch.randn(16, 4)).sum().backward()
        opt.step()
        (row,) = mon.end_episode(ep)
        got[ep] = row
    assert sorted(got) == [0, 2, 4, 6, 8]
    for ep, row in got.items():
        assert math.isnan(row["stable_rank.1"]) == (ep not in (0, 4, 8))  # every 2nd measured episode
        assert row["feature_norm.1"] > 0 and row["active_units.1"] > 0  # the other measures: always
    with pytest.raises(ValueError, match="rank_interval"):
        GradientFlowMonitor(rank_interval=0)


SMALL = {
    "env": {"n_agents": 10, "max_steps": 4},
    "agent": {"batch_size": 16, "critic_hidden": [64, 32]},
    "training": {"episodes": 5, "eval_episodes": 1, "tensorboard": False},
}


def test_the_measures_reach_the_compacted_tables_and_old_tables_still_load(tmp_path):
    cfg = build_config(json.loads(json.dumps(SMALL)), ["monitor.enabled=true", "monitor.rank_interval=1"])
    Trainer(cfg, tmp_path / "r", progress=False, quiet=True).run()
    mdir = tmp_path / "r" / "monitor"
    assert compact.compacted(mdir)
    agents = pd.read_parquet(mdir / compact.AGENTS)
    new = [c for c in agents.columns if c.startswith(compact.LAYER_PREFIXES[3:])]
    for role, layers in (("actors", ("act1", "act2")), ("critic", ("act1", "act2"))):
        a = agents[agents["role"] == role]
        for k in FEATURE_KEYS:
            for layer in layers:
                assert a[f"{k}.{layer}"].notna().all(), (role, k, layer)
        assert (a["stable_rank.act1"] >= 1).all() and (a["weight_difference"] > 0).all()
        assert (a["weight_difference.fc1"] > 0).all()
    episodes = pd.read_parquet(mdir / compact.EPISODES)
    assert all(f"{c}_mean" in episodes for c in [*new, "weight_magnitude", "weight_difference"])
    crit = episodes[episodes["role"] == "critic"].set_index("episode")["stable_rank.act1_mean"]
    by_hand = agents[agents["role"] == "critic"].set_index("episode")["stable_rank.act1"]
    np.testing.assert_allclose(crit.to_numpy(), by_hand.loc[crit.index].to_numpy())
    # a run compacted before the measures existed: its files lack the columns and load as before
    old = agents.drop(columns=[*new, "weight_magnitude", "weight_difference"])
    old.to_parquet(mdir / compact.AGENTS)
    episodes.drop(columns=[c for c in episodes if c.startswith(tuple(new)) or c.startswith("weight_")]).to_parquet(
        mdir / compact.EPISODES
    )
    assert compact.episodes_current(mdir)
    summary = Store([tmp_path])._summary_of(tmp_path / "r", None)
    assert len(summary) == len(episodes) and "grad_norm_mean" in summary
    assert not any(c.startswith("stable_rank") for c in summary)
    # parts of both kinds (a run resumed across versions) read and aggregate together
    both = pd.concat([old, agents.iloc[: len(agents) // 2]], ignore_index=True)
    agg = compact.aggregate_agents(both)
    assert "stable_rank.act1_mean" in agg and agg["grad_norm_mean"].notna().all()
    assert len(read_agents(mdir)) == len(agents)


def test_the_rank_interval_setting_keeps_run_ids_and_matches_the_monitor_default():
    from ccm_madrl.config.experiment import ExperimentConfig, MonitorConfig

    assert MonitorConfig().rank_interval == core.RANK_INTERVAL == GradientFlowMonitor().rank_interval
    base = ExperimentConfig()
    assert "rank_interval" in base.model_dump()["monitor"]
    same = ExperimentConfig(monitor={"rank_interval": core.RANK_INTERVAL})
    other = ExperimentConfig(monitor={"rank_interval": 1})
    assert same.id() == base.id() != other.id()  # at its default the field leaves earlier run ids as they were
    with pytest.raises(ValueError, match="rank_interval"):
        build_config({}, ["monitor.rank_interval=0"])


def test_the_run_monitor_takes_the_configs_rank_interval(tmp_path):
    """``monitor.rank_interval`` of a run's config reaches the run's monitor."""
    from ccm_madrl.config.experiment import ExperimentConfig
    from ccm_madrl.monitor.integration import monitor_for

    class NoNetworks:
        def attach_monitor(self, monitor):
            self.monitor = monitor

    cfg = ExperimentConfig(monitor={"rank_interval": 7})
    learner = NoNetworks()
    run_mon = monitor_for(learner, cfg, tmp_path / "run")
    assert run_mon.mon.rank_interval == 7 and learner.monitor is run_mon.mon
