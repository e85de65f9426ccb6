"""ReDo and Shrink-and-Perturb (agents.resets) on the package's networks: which units are dormant,
what a recycle changes and what it keeps (the output, the other units, the optimiser's other
moments), the initial distributions, and that the draws are a function of (seed, episode)."""

from __future__ import annotations

import copy

import pytest
import torch

from ccm_madrl.agents import resets
from ccm_madrl.agents.networks import BatchedActor, MasterCritic, PackedCritic
from ccm_madrl.agents.optim import BatchedOptimizer


def _features(actor: BatchedActor, states: torch.Tensor) -> list[torch.Tensor]:
    a = actor.activations(states)
    return [a["act1"], a["act2"]]


def test_dormant_scores_units_against_their_layers_mean():
    f = torch.tensor([[[1.0, 0.0, 2.0, 0.05], [3.0, 0.0, 2.0, 0.15]]])  # one network, 2 samples, 4 units
    # E|h| = [2, 0, 2, 0.1], layer mean 1.025: scores [1.95, 0, 1.95, 0.0976]
    assert resets.dormant(f, 0.1).tolist() == [[False, True, False, True]]
    assert resets.dormant(f, 0.05).tolist() == [[False, True, False, False]]
    assert resets.dormant(f[0], 0.0).tolist() == [[False, True, False, False]]  # (batch, units): one network


def _actor_with_dead_units(n=3):
    torch.manual_seed(0)
    actor = BatchedActor(n, hidden=(16, 8))
    with torch.no_grad():  # units 2 and 5 of fc1 dead in network 1, unit 3 of fc2 dead in every network
        actor.fc1.weight[1, [2, 5]] = 0.0
        actor.fc1.bias[1, [2, 5]] = -1.0
        actor.fc2.weight[:, 3] = 0.0
        actor.fc2.bias[:, 3] = -1.0
    return actor


def test_redo_recycles_dead_units_keeps_the_output_and_zeroes_their_moments():
    actor = _actor_with_dead_units()
    states = torch.rand(64, 3, 7) * 10
    opt = BatchedOptimizer(list(actor.parameters()), "adam", lr=1e-3)
    for m in opt.m + opt.v:
        m.fill_(1.0)
    before = copy.deepcopy(actor)
    out0 = actor(states)
    masks = [resets.dormant(f, 0.0) for f in _features(actor, states)]
    assert masks[0][1, [2, 5]].all() and masks[1][:, 3].all()  # the planted dead units (and any others)
    n = resets.redo(actor, _features(actor, states), 0.0, torch.Generator().manual_seed(1), opt)
    assert torch.equal(n, masks[0].sum(1) + masks[1].sum(1))
    assert torch.equal(actor(states), out0)  # dead units contributed 0, their outgoing weights are 0
    w1, b1 = actor.fc1.weight, actor.fc1.bias
    changed = (w1 != before.fc1.weight).any(-1)
    assert torch.equal(changed, masks[0])  # only the recycled rows were re-drawn
    assert (w1[1, [2, 5]].abs() <= 1 / 7**0.5).all() and (b1[1, [2, 5]].abs() <= 1 / 7**0.5).all()
    kept = ~masks[1][1]  # outgoing weights zeroed, except in fc2 units recycled themselves (fresh rows)
    assert torch.equal(actor.fc2.weight[1, kept][:, [2, 5]], torch.zeros(int(kept.sum()), 2))
    assert torch.equal(actor.fc3.weight[:, :, 3], torch.zeros(3, 3))
    k = [p is actor.fc1.weight for p in opt.params].index(True)
    assert (opt.m[k][1, [2, 5]] == 0).all() and (opt.v[k][1, [2, 5]] == 0).all()
    assert (opt.m[k][~masks[0]] == 1).all()  # other rows' moments untouched
    alive = _features(actor, states)
    assert (alive[0][1, :, [2, 5]].abs().sum(0) > 0).any()  # a recycled unit can fire again


def test_redo_is_a_function_of_the_generator():
    a, b = _actor_with_dead_units(), _actor_with_dead_units()
    states = torch.rand(32, 3, 7)
    for net in (a, b):
        resets.redo(net, _features(net, states), 0.0, resets.reset_generator(3, 40, "actors"))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = _actor_with_dead_units()
    resets.redo(c, _features(c, states), 0.0, resets.reset_generator(3, 41, "actors"))
    assert not torch.equal(c.fc1.weight, a.fc1.weight)


def test_redo_on_the_critics_nn_linear_and_torch_adam():
    torch.manual_seed(0)
    critic = MasterCritic(4, hidden=(32, 16))
    with torch.no_grad():
        critic.fc2.weight[7] = 0.0
        critic.fc2.bias[7] = -1.0
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    x = torch.rand(50, critic.fc1.in_features)
    critic.fc3(torch.relu(critic.fc2(torch.relu(critic.fc1(x))))).sum().backward()
    opt.step()
    h1 = torch.relu(critic.fc1(x))
    h2 = torch.relu(critic.fc2(h1))
    masks = [resets.dormant(h.detach(), 0.0) for h in (h1, h2)]
    assert masks[1][0, 7]  # the planted dead unit (and any the random init left dead)
    n = resets.redo(critic, [h1.detach(), h2.detach()], 0.0, torch.Generator().manual_seed(0), opt)
    assert n.tolist() == [int(masks[0].sum() + masks[1].sum())]
    assert critic.fc3.weight[0, 7] == 0 and opt.state[critic.fc3.weight]["exp_avg"][0, 7] == 0
    assert (opt.state[critic.fc2.weight]["exp_avg_sq"][7] == 0).all()
    assert (critic.fc2.weight[7].abs() <= 1 / 32**0.5).all() and critic.fc2.weight[7].abs().sum() > 0


def test_shrink_perturb_mixes_the_weights_with_a_fresh_draw_of_the_initial_distribution():
    torch.manual_seed(0)
    critic = PackedCritic(2, MasterCritic(4, hidden=(32, 16)))
    before = copy.deepcopy(critic)
    resets.shrink_perturb(critic, 0.8, 0.0, torch.Generator().manual_seed(0))
    assert all(torch.allclose(p, 0.8 * q, rtol=0, atol=0) for p, q in zip(critic.parameters(), before.parameters()))
    critic = copy.deepcopy(before)
    resets.shrink_perturb(critic, 1.0, 1.0, torch.Generator().manual_seed(0))
    bounds = [(1 / critic.fc1.weight.shape[-1] ** 0.5), 1 / 32**0.5, resets.INIT_W]
    for layer, old, bound in zip(resets.layers_of(critic), resets.layers_of(before), bounds):
        noise = layer.weight - old.weight
        assert noise.abs().max() <= bound + 1e-7 and noise.abs().max() > 0.5 * bound  # U(-b, b)
        assert (layer.bias - old.bias).abs().max() <= bound + 1e-7


@pytest.mark.parametrize("network", ["actors", "critic"])
def test_reset_generators_differ_by_seed_episode_and_network(network):
    draw = lambda g: torch.rand(4, generator=g)  # noqa: E731
    base = draw(resets.reset_generator(1, 10, network))
    assert torch.equal(base, draw(resets.reset_generator(1, 10, network)))
    other = "critic" if network == "actors" else "actors"
    for g in (resets.reset_generator(2, 10, network), resets.reset_generator(1, 11, network),
              resets.reset_generator(1, 10, other)):  # fmt: skip
        assert not torch.equal(base, draw(g))


# ----------------------------------------------------------------------------- in a run
def _run_cfg(reset: str, episodes: int = 8, **mit):
    import json

    from ccm_madrl.experiment import build_config
    from test_pack import SMALL

    d = json.loads(json.dumps(SMALL))
    d["agent"].update(actor_update="sequential", actor_lr=1e-2, critic_lr=1e-2)
    d["agent"]["mitigations"] = {"reset": reset, "reset_every": 3, **mit}
    d["training"]["episodes"] = episodes
    d.update(seed=5, name=f"reset-{reset}")
    return build_config(d)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("reset", ["redo", "shrink_perturb"])
def test_a_run_with_resets_records_them_and_resumes_bit_identically(tmp_path, reset, monkeypatch):
    import json

    import pandas as pd

    from ccm_madrl.experiment import Trainer
    from ccm_madrl.experiment.engine import Engine
    from ccm_madrl.experiment.pack import packable
    from ccm_madrl.experiment.stop import StopToken

    cfg = _run_cfg(reset, redo_tau=0.5)
    assert packable(cfg) is not None and "reset" in packable(cfg)
    assert Trainer(cfg, tmp_path / "whole", progress=False, quiet=True).run().state == "done"
    m = pd.read_parquet(tmp_path / "whole" / "metrics.parquet")
    ebt = cfg.agent.replay.episodes_before_train
    due = [(ep + 1) % 3 == 0 and ep + 1 > ebt for ep in m["episode"]]
    col = "reset_units_actors" if reset == "redo" else "reset_applied_actors"
    assert m[col].notna().tolist() == due and any(due)
    if reset == "redo":
        assert (m.loc[due, "reset_units_critic"] >= 0).all() and m.loc[due, "reset_units_actors"].sum() > 0
    base = _run_cfg("none")
    Trainer(base, tmp_path / "plain", progress=False, quiet=True).run()
    plain = pd.read_parquet(tmp_path / "plain" / "metrics.parquet")
    first = due.index(True)
    same = slice(0, first + 1)  # up to the first reset (after that episode's training step), the run without
    assert plain["train_return"].iloc[same].tolist() == m["train_return"].iloc[same].tolist()
    later = m["eval_return"].iloc[first + 1 :].to_numpy()
    if reset == "shrink_perturb":  # every weight moved: the runs part after the first reset
        assert not (later == plain["eval_return"].iloc[first + 1 :].to_numpy()).all()

    token, real = StopToken(), Engine.episode

    def episode(self, ep):
        if ep == first + 1:
            token.request()
        return real(self, ep)

    monkeypatch.setattr(Engine, "episode", episode)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path / "cut", progress=False, quiet=True, stop=token).run()
    assert json.loads((tmp_path / "cut" / "status.json").read_text())["state"] == "interrupted"
    monkeypatch.setattr(Engine, "episode", real)
    Trainer(cfg, tmp_path / "cut", progress=False, quiet=True).run()
    y = pd.read_parquet(tmp_path / "cut" / "metrics.parquet")
    cols = [k for k in m.columns if not k.startswith("time_")]
    pd.testing.assert_frame_equal(m[cols], y[cols])
