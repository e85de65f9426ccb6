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


# ----------------------------------------------------------------------------- plasticity injection
INJECT_TOL = 1e-13  # float64, |output change| / max |output| at the injection; measured <= 1.3e-15 (50 actors, the critic)


def _states(n_agents: int, batch: int = 40, dtype=torch.float64) -> torch.Tensor:
    return (torch.rand(batch, n_agents, 7, generator=torch.Generator().manual_seed(9)) * 5).to(dtype)


@pytest.mark.parametrize("layernorm", [False, True])
def test_injection_keeps_the_actors_output_to_float64_rounding(layernorm):
    torch.manual_seed(0)
    actor = BatchedActor(5, hidden=(16, 8), layernorm=layernorm).double()
    states = _states(5)
    with torch.no_grad():
        z0 = actor.forward_with_preactivation(states)[1]
    assert resets.inject(actor, resets.reset_generator(1, 10, "actors")) == 8
    assert actor.fc2.weight.shape == (5, 24, 16) and actor.fc3.weight.shape == (5, 3, 24) and actor.hidden == (16, 24)
    with torch.no_grad():
        z1 = actor.forward_with_preactivation(states)[1]
    err = float((z1 - z0).abs().max() / z0.abs().max())  # measured: 0 or ~1e-16
    assert err <= INJECT_TOL
    w2, v3 = actor.fc2.weight.detach(), actor.fc3.weight.detach()
    assert torch.equal(w2[:, 8:16], w2[:, 16:]) and torch.equal(v3[..., 8:16], -v3[..., 16:])
    assert not torch.equal(w2[:, :8], w2[:, 8:16])  # a fresh head, not a copy of the old one
    assert (w2[:, 8:16].abs() <= 1 / 16**0.5).all() and (v3[..., 8:16].abs() <= resets.INIT_W).all()
    assert float(w2[:, 8:16].abs().max()) > 0.5 / 16**0.5  # U(-b, b), per actor its own draws
    assert not torch.equal(w2[0, 8:16], w2[1, 8:16])


def test_injection_keeps_the_critics_output_to_float64_rounding():
    torch.manual_seed(0)
    critic = MasterCritic(4, hidden=(32, 16)).double()
    s, u = _states(4), torch.rand(40, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        q0 = critic(s, u, s[:, 1], u[:, 1])
        resets.inject(critic, resets.reset_generator(1, 10, "critic"))
        q1 = critic(s, u, s[:, 1], u[:, 1])
    assert critic.fc2.weight.shape == (48, 32) and critic.fc3.weight.shape == (1, 48)
    assert float((q1 - q0).abs().max() / q0.abs().max()) <= INJECT_TOL


def test_injection_masks_pass_the_new_head_and_the_encoder_by_the_rule():
    torch.manual_seed(0)
    actor = BatchedActor(3, hidden=(16, 8))
    resets.inject(actor, torch.Generator().manual_seed(0))
    names = [nm for nm, _ in actor.named_parameters()]
    for encoder in ("train", "freeze"):
        masks = dict(zip(names, resets.injection_masks(actor, 8, encoder)))
        assert (masks["fc1.weight"] == (encoder == "train")).all() and (masks["fc1.bias"] == (encoder == "train")).all()
        rows = torch.zeros(24, dtype=torch.bool)
        rows[8:16] = True
        assert torch.equal(masks["fc2.weight"][0].bool().all(-1), rows) and torch.equal(masks["fc2.bias"][0].bool(), rows)
        assert torch.equal(masks["fc3.weight"][0].bool().all(0), rows) and masks["fc3.bias"].bool().all()


def _inject_cfg(encoder: str = "train", episodes: int = 8, monitor: bool = False):
    import json

    from ccm_madrl.experiment import build_config
    from test_pack import SMALL

    d = json.loads(json.dumps(SMALL))
    d["agent"].update(actor_update="sequential", actor_lr=1e-2, critic_lr=1e-2)
    d["agent"]["mitigations"] = {"reset": "inject", "inject_at": 4, "inject_encoder": encoder}
    d["training"]["episodes"] = episodes
    d["monitor"] = {"enabled": monitor}
    d.update(seed=5, name=f"inject-{encoder}")
    return build_config(d)


def _snapshots(episodes):
    """A callback keeping the learner's parameters (by network) at the end of some episodes."""
    from ccm_madrl.experiment.callbacks import Callback

    class Snapshots(Callback):
        def __init__(self):
            self.kept = {}

        def on_episode_end(self, trainer, row):
            if row["episode"] in episodes:
                lr = trainer.learner
                self.kept[row["episode"]] = {
                    net: {nm: p.detach().clone() for nm, p in getattr(lr, net).named_parameters()}
                    for net in ("actors", "critic", "actors_target", "critic_target")
                }
            return True

    return Snapshots()


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("encoder", ["train", "freeze"])
def test_after_the_injection_only_the_new_head_learns(tmp_path, encoder):
    import pandas as pd

    from ccm_madrl.experiment import Trainer
    from ccm_madrl.experiment.callbacks import default_callbacks

    cfg = _inject_cfg(encoder)
    snaps = _snapshots({3, 7})  # inject_at 4: after episode 3's (0-based) training step
    t = Trainer(cfg, tmp_path / "r", progress=False, quiet=True, callbacks=lambda t: [snaps, *default_callbacks(t)])
    assert t.run().state == "done"
    m = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert m["reset_applied_actors"].notna().tolist() == [ep == 3 for ep in m["episode"]]
    assert m["reset_applied_critic"].notna().sum() == 1
    at, end = snaps.kept[3], snaps.kept[7]
    for net, h2 in (("actors", 32), ("critic", 32)):
        a, b = at[net], end[net]
        assert all(torch.equal(at[net][nm], at[f"{net}_target"][nm]) for nm in a)  # the target follows
        assert a["fc2.weight"].shape[-2] == 3 * h2
        old, new, copy_ = slice(0, h2), slice(h2, 2 * h2), slice(2 * h2, 3 * h2)
        assert torch.equal(a["fc2.weight"][..., old, :], b["fc2.weight"][..., old, :])  # theta frozen
        assert torch.equal(a["fc2.bias"][..., old], b["fc2.bias"][..., old])
        assert torch.equal(a["fc3.weight"][..., old], b["fc3.weight"][..., old])
        assert torch.equal(a["fc2.weight"][..., copy_, :], b["fc2.weight"][..., copy_, :])  # the frozen copy
        assert torch.equal(a["fc3.weight"][..., copy_], b["fc3.weight"][..., copy_])
        assert not torch.equal(a["fc2.weight"][..., new, :], b["fc2.weight"][..., new, :])  # the new head learns
        assert not torch.equal(a["fc3.weight"][..., new], b["fc3.weight"][..., new])
        assert torch.equal(a["fc1.weight"], b["fc1.weight"]) == (encoder == "freeze")


@pytest.mark.usefixtures("one_torch_thread")
def test_an_injected_run_resumes_bit_identically(tmp_path, monkeypatch):
    import json

    import pandas as pd

    from ccm_madrl.experiment import Trainer
    from ccm_madrl.experiment.engine import Engine
    from ccm_madrl.experiment.stop import StopToken

    cfg = _inject_cfg(episodes=9, monitor=True)
    assert Trainer(cfg, tmp_path / "whole", progress=False, quiet=True).run().state == "done"
    m = pd.read_parquet(tmp_path / "whole" / "metrics.parquet")
    plain = pd.read_parquet(_plain_run(tmp_path, cfg) / "metrics.parquet")
    same = slice(0, 4)  # up to the injection (after episode 3's training step), the run without
    assert plain["train_return"].iloc[same].tolist() == m["train_return"].iloc[same].tolist()
    assert not (plain["critic_loss"].iloc[5:].to_numpy() == m["critic_loss"].iloc[5:].to_numpy()).all()
    for cut in (4, 6):  # a checkpoint right after the injection, and one later
        token, real = StopToken(), Engine.episode

        def episode(self, ep, cut=cut, token=token, real=real):
            if ep == cut:
                token.request()
            return real(self, ep)

        monkeypatch.setattr(Engine, "episode", episode)
        with pytest.raises(KeyboardInterrupt):
            Trainer(cfg, tmp_path / f"cut{cut}", progress=False, quiet=True, stop=token).run()
        assert json.loads((tmp_path / f"cut{cut}" / "status.json").read_text())["state"] == "interrupted"
        monkeypatch.setattr(Engine, "episode", real)
        Trainer(cfg, tmp_path / f"cut{cut}", progress=False, quiet=True).run()
        y = pd.read_parquet(tmp_path / f"cut{cut}" / "metrics.parquet")
        cols = [k for k in m.columns if not k.startswith("time_")]
        pd.testing.assert_frame_equal(m[cols], y[cols])


def _plain_run(tmp_path, cfg):
    from ccm_madrl.experiment import Trainer

    d = cfg.model_dump(mode="json")
    d["agent"]["mitigations"]["reset"] = "none"
    d["name"] = "plain"
    from ccm_madrl.experiment import build_config

    Trainer(build_config(d), tmp_path / "plain", progress=False, quiet=True).run()
    return tmp_path / "plain"


def test_injection_is_refused_in_a_pack_and_before_training_starts():
    from ccm_madrl.config.experiment import ConfigError
    from ccm_madrl.experiment.pack import packable

    assert packable(_inject_cfg()) == "agent.mitigations.reset 'inject' (resets are per single run)"
    with pytest.raises(ConfigError, match="mitigations.inject_at: must exceed replay.episodes_before_train"):
        import json

        from ccm_madrl.experiment import build_config
        from test_pack import SMALL

        d = json.loads(json.dumps(SMALL))
        d["agent"]["mitigations"] = {"reset": "inject", "inject_at": 1}
        build_config(d)


def test_the_shipped_injection_sweep_expands_to_the_client_lr_slice():
    from pathlib import Path

    from ccm_madrl.experiment.pack import packable
    from ccm_madrl.sweep.plan import expand, load_sweep

    spec, base = load_sweep(Path(__file__).resolve().parents[1] / "configs" / "mitigations" / "inject.yaml")
    runs = expand(spec, base)
    assert len(runs) == 40 and {r.config.training.episodes for r in runs} == {2000}
    assert {(r.config.agent.mitigations.reset, r.config.agent.mitigations.inject_at) for r in runs} == {("inject", 1000)}
    assert {r.config.agent.actor_lr for r in runs} == {1e-4, 1e-3, 1e-2, 1e-1}
    assert all(packable(r.config) is not None for r in runs)
