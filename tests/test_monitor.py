"""The gradient-flow monitor on crafted networks with known answers, on a plain DDPG-style pair and
on the CCM agent; it never changes training."""

from __future__ import annotations

import copy
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
from ccm_madrl.monitor import GradientFlowMonitor, agent_stops, run_stops
from ccm_madrl.monitor.integration import read_agents


def ddpg_pair(seed=0):
    torch.manual_seed(seed)
    actor = nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2), nn.Tanh()
    )
    critic = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1))
    return actor, critic


def ddpg_step(actor, critic, aopt, copt, s):
    """One DDPG update: critic regression to a fixed target, then the actor ascends Q."""
    q = critic(torch.cat([s, actor(s).detach()], -1))
    copt.zero_grad()
    ((q - 1.0) ** 2).mean().backward()
    copt.step()
    aopt.zero_grad()
    (-critic(torch.cat([s, actor(s)], -1)).mean()).backward()
    aopt.step()


def watch(actor, critic, aopt, copt):
    mon = GradientFlowMonitor()
    mon.attach("actor", actor, optimizer=aopt)
    mon.attach("critic", critic, optimizer=copt)
    return mon


def one_episode(mon, actor, critic, aopt, copt, s, episode=0):
    mon.start_episode(episode)
    ddpg_step(actor, critic, aopt, copt, s)
    return {r["role"]: r for r in mon.end_episode(episode)}


def test_autodetects_output_and_layers():
    actor, critic = ddpg_pair()
    mon = GradientFlowMonitor()
    mon.attach("actor", actor)
    mon.attach("critic", critic)
    a, c = mon.roles["actor"], mon.roles["critic"]
    assert a.output == "5" and a.output_layer == "4" and a.hidden == ["1", "3"] and a.actor
    assert c.output is None and not c.actor


def test_huge_output_bias_gives_zero_actor_gradient_attributed_to_saturation():
    actor, critic = ddpg_pair()
    with torch.no_grad():
        actor[4].bias.fill_(1e3)  # tanh(z) == 1 exactly in float32: derivative 0
    aopt, copt = torch.optim.SGD(actor.parameters(), lr=0.1), torch.optim.SGD(critic.parameters(), lr=0.1)
    before = copy.deepcopy(actor.state_dict())
    rows = one_episode(watch(actor, critic, aopt, copt), actor, critic, aopt, copt, torch.randn(32, 4))
    a = rows["actor"]
    assert a["grad_norm"] == 0.0 and not a["changed"] and a["max_abs_change"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in actor.state_dict().items())
    assert a["frac_saturated"] == 1.0 and a["frac_sat_exact"] == 1.0 and a["frac_out_gt09"] == 1.0
    assert a["frac_flowing"] == a["frac_dead"] == a["frac_no_path"] == 0.0
    assert a["z_min"] == pytest.approx(1e3, rel=1e-2) and a["frac_abs_z_gt2"] == 1.0
    assert rows["critic"]["changed"] and rows["critic"]["grad_norm"] > 0


def test_dead_hidden_units_are_attributed_to_dead_units():
    actor, critic = ddpg_pair()
    with torch.no_grad():
        actor[2].bias.fill_(-1e3)  # every unit of the last hidden layer is dead
    aopt, copt = torch.optim.SGD(actor.parameters(), lr=0.1), torch.optim.SGD(critic.parameters(), lr=0.1)
    rows = one_episode(watch(actor, critic, aopt, copt), actor, critic, aopt, copt, torch.randn(32, 4))
    a = rows["actor"]
    assert a["dead.3"] == 1.0 and a["dormant.3"] == 1.0
    assert a["frac_dead"] == 1.0 and a["frac_saturated"] == 0.0 and a["frac_no_path"] == 0.0
    # only the output bias can learn: every other layer's gradient is exactly zero
    assert a["grad_norm.0"] == 0.0 and a["grad_norm.2"] == 0.0 and a["grad_norm.4"] > 0.0


def test_agent_excluded_from_the_loss_is_attributed_to_no_path():
    torch.manual_seed(0)
    n = 3
    actors = BatchedActor(n, state_dim=4, action_dim=2, hidden=(8, 8))
    opt = BatchedOptimizer(list(actors.parameters()), "adam", lr=1e-3)
    mon = GradientFlowMonitor().attach("actors", actors, optimizer=opt, per_agent=True)
    mon.start_episode(0)
    u = actors(torch.randn(16, n, 4))
    loss = -(u[:, 0].sum() + u[:, 1].sum())  # agent 2 is never in the loss
    grads = torch.autograd.grad(loss, list(actors.parameters()))
    opt.step(grads)
    rows = {r["agent"]: r for r in mon.end_episode(0)}
    assert rows[2]["frac_no_path"] == 1.0 and rows[2]["grad_norm"] == 0.0 and not rows[2]["changed"]
    for i in (0, 1):
        assert rows[i]["frac_flowing"] == 1.0 and rows[i]["changed"]
    for r in rows.values():
        assert sum(
            r[k] for k in ("frac_flowing", "frac_saturated", "frac_dead", "frac_no_path")
        ) == pytest.approx(1.0)


def test_gradient_norms_equal_reference_computation():
    torch.manual_seed(1)
    n = 4
    actors = BatchedActor(n, state_dim=5, action_dim=3, hidden=(6, 7))
    opt = BatchedOptimizer(list(actors.parameters()), "sgd", lr=1e-3)
    mon = GradientFlowMonitor().attach("actors", actors, optimizer=opt, per_agent=True)
    mon.start_episode(0)
    u = actors(torch.randn(9, n, 5))
    grads = torch.autograd.grad((u**2).sum(), list(actors.parameters()))
    opt.step(grads)
    rows = {r["agent"]: r for r in mon.end_episode(0)}
    named = dict(zip([nm for nm, _ in actors.named_parameters()], grads))
    for i in range(n):
        per_layer = {
            ly: torch.nn.utils.get_total_norm([named[f"{ly}.weight"][i], named[f"{ly}.bias"][i]])
            for ly in ("fc1", "fc2", "fc3")
        }
        for ly, ref in per_layer.items():
            assert rows[i][f"grad_norm.{ly}"] == pytest.approx(float(ref), rel=1e-6)
        total = torch.nn.utils.get_total_norm([g[i] for g in grads])
        assert rows[i]["grad_norm"] == pytest.approx(float(total), rel=1e-6)


def test_sequential_steps_are_measured_per_agent_and_averaged():
    torch.manual_seed(2)
    n = 3
    actors = BatchedActor(n, state_dim=2, action_dim=1, hidden=(4, 4))
    opt = BatchedOptimizer(list(actors.parameters()), "sgd", lr=1e-2)
    mon = GradientFlowMonitor().attach("actors", actors, optimizer=opt, per_agent=True)
    mon.start_episode(0)
    s = torch.randn(5, n, 2)
    norms = []
    for i in range(n):  # like the published sequential update: one agent per step
        grads = torch.autograd.grad(actors(s).sum(), list(actors.parameters()))
        norms.append(float(torch.nn.utils.get_total_norm([g[i] for g in grads])))
        opt.step(grads, agent=i)
    rows = {r["agent"]: r for r in mon.end_episode(0)}
    for i in range(n):
        assert rows[i]["steps"] == 1 and rows[i]["grad_norm"] == pytest.approx(norms[i], rel=1e-6)


def test_unsampled_episodes_and_acting_passes_are_not_measured():
    actor, critic = ddpg_pair()
    aopt, copt = torch.optim.SGD(actor.parameters(), lr=0.1), torch.optim.SGD(critic.parameters(), lr=0.1)
    mon = GradientFlowMonitor(interval=2)
    mon.attach("actor", actor, optimizer=aopt)
    mon.attach("critic", critic, optimizer=copt)
    assert mon.start_episode(1) is False
    ddpg_step(actor, critic, aopt, copt, torch.randn(4, 4))
    assert mon.end_episode(1) is None
    mon.start_episode(2)
    with torch.no_grad():
        actor(torch.full((3, 4), 100.0))  # acting: not a training pass
    assert "z" not in mon.roles["actor"].captured


def test_monitor_does_not_change_ddpg_training():
    results = []
    for use in (False, True):
        actor, critic = ddpg_pair(3)
        aopt, copt = (
            torch.optim.Adam(actor.parameters(), lr=1e-2),
            torch.optim.Adam(critic.parameters(), lr=1e-2),
        )
        mon = watch(actor, critic, aopt, copt) if use else None
        g = torch.Generator().manual_seed(0)
        for ep in range(5):
            if mon:
                mon.start_episode(ep)
            ddpg_step(actor, critic, aopt, copt, torch.randn(16, 4, generator=g))
            if mon:
                mon.end_episode(ep)
        results.append([p.detach().clone() for p in [*actor.parameters(), *critic.parameters()]])
    assert all(torch.equal(a, b) for a, b in zip(*results))


SMALL = {
    "env": {"n_agents": 10, "max_steps": 4},
    "agent": {"batch_size": 16, "critic_hidden": [64, 32]},
    "training": {"episodes": 6, "eval_episodes": 2, "tensorboard": True},
}


@pytest.mark.parametrize("update", ["sequential", "simultaneous"])
def test_monitor_on_the_ccm_agent_changes_nothing(tmp_path, update):
    base = json.loads(json.dumps(SMALL))
    base["agent"]["actor_update"] = update
    on = Trainer(build_config(base, ["monitor.enabled=true"]), tmp_path / "on", progress=False)
    off = Trainer(build_config(base, ["monitor.enabled=false"]), tmp_path / "off", progress=False)
    on.run()
    off.run()
    for p, q in zip(
        [*on.learner.actors.parameters(), *on.learner.critic.parameters()],
        [*off.learner.actors.parameters(), *off.learner.critic.parameters()],
    ):
        assert torch.equal(p, q)
    m_on = pd.read_parquet(tmp_path / "on" / "metrics.parquet")
    m_off = pd.read_parquet(tmp_path / "off" / "metrics.parquet")
    pd.testing.assert_series_equal(m_on["eval_return"], m_off["eval_return"])
    agents = read_agents(tmp_path / "on" / "monitor")
    trained = int(m_on["trained"].sum())
    assert len(agents) == trained * (10 + 1)  # 10 actors + the critic, per trained episode
    assert set(agents["role"]) == {"actors", "critic"}
    assert (agents.loc[agents.role == "actors", "steps"] == 1).all()
    for col in ("actor_grad_norm", "critic_grad_norm", "grad_ratio", "actors_changed", "effective_actor_lr"):
        assert m_on.loc[m_on.trained, col].notna().all()
    summary = json.loads((tmp_path / "on" / "monitor" / "summary.json").read_text())
    assert "all_actors_stop_exact" in summary
    assert list((tmp_path / "on" / "tb").glob("events.*"))


def test_stop_events_from_rows():
    rows = []
    changes = {0: [1, 1, 0, 0, 0], 1: [1, 0, 1, 0, 0], 2: [1, 1, 1, 1, 1]}
    for agent, seq in changes.items():
        for ep, c in enumerate(seq):
            rows.append(
                {
                    "episode": ep + 1,
                    "role": "actors",
                    "agent": agent,
                    "is_actor": True,
                    "steps": 1,
                    "changed": bool(c),
                    "max_abs_change": 1e-3 if c else 0.0,
                    "grad_norm": 0.0 if ep >= agent else 0.5,
                }
            )
    for ep in range(5):
        rows.append(
            {
                "episode": ep + 1,
                "role": "critic",
                "agent": 0,
                "is_actor": False,
                "steps": 1,
                "changed": True,
                "max_abs_change": 1e-9,
                "grad_norm": 1.0,
            }
        )
    df = pd.DataFrame(rows)
    st = agent_stops(df).set_index(["role", "agent"])
    assert st.loc[("actors", 0), "stop_exact"] == 3 and st.loc[("actors", 0), "first_stop_exact"] == 3
    assert st.loc[("actors", 1), "first_stop_exact"] == 2 and st.loc[("actors", 1), "stop_exact"] == 4
    assert np.isnan(st.loc[("actors", 2), "stop_exact"])
    run = run_stops(df)
    assert np.isnan(run["all_actors_stop_exact"]) and run["actors_stopped_frac_exact"] == pytest.approx(2 / 3)
    # the critic changes every episode (exact) but by less than 1e-8 (thresholded)
    assert np.isnan(run["critic_stop_exact"]) and run["critic_stop_thr"] == 1
    run2 = run_stops(df[df.agent != 2])
    assert run2["all_actors_stop_exact"] == 4
    # gradients vanish for good from episode agent + 1 (agent 0: 1, agent 1: 2, agent 2: 3)
    assert st.loc[("actors", 2), "grad_zero"] == 3 and st.loc[("actors", 0), "grad_zero"] == 1
    assert run["all_actors_grad_zero"] == 3 and run["actors_grad_zero_frac"] == 1.0
    assert np.isnan(st.loc[("critic", 0), "grad_zero"])
    # a run with no trained episode (every measured row has steps == 0): no stop events, no error
    untrained = run_stops(df.assign(steps=0))
    assert np.isnan(untrained["all_actors_grad_zero"]) and np.isnan(untrained["critic_stop_exact"])
    assert list(agent_stops(df.iloc[:0]).columns) == list(agent_stops(df).columns)


def test_attach_errors():
    actor, _ = ddpg_pair()
    mon = GradientFlowMonitor()
    with pytest.raises(ValueError, match="no sub-module named 'head'"):
        mon.attach("actor", actor, output="head")
    mon.attach("actor", actor)
    with pytest.raises(ValueError, match="already attached"):
        mon.attach("actor", actor)
    with pytest.raises(ValueError, match="dimension 0"):
        GradientFlowMonitor().attach("x", nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 4)), per_agent=True)
    with pytest.raises(ValueError, match="interval"):
        GradientFlowMonitor(interval=0)


def test_live_warning_when_an_actor_freezes():
    actor, critic = ddpg_pair()
    with torch.no_grad():
        actor[4].bias.fill_(1e3)
    aopt, copt = torch.optim.SGD(actor.parameters(), lr=0.1), torch.optim.SGD(critic.parameters(), lr=0.1)
    messages = []
    mon = GradientFlowMonitor(warn=messages.append)
    mon.attach("actor", actor, optimizer=aopt)
    mon.attach("critic", critic, optimizer=copt)
    one_episode(mon, actor, critic, aopt, copt, torch.randn(8, 4), episode=3)
    assert any("episode 3: actor [0] stopped changing" in m for m in messages)
    assert any("every actor" in m for m in messages)
    assert mon.first_stop["actor"]["exact"].tolist() == [3] and mon.first_stop["critic"][
        "exact"
    ].tolist() == [-1]


def test_early_stop_once_all_actors_are_frozen(tmp_path):
    base = json.loads(json.dumps(SMALL))
    base["training"]["episodes"] = 30
    # with a threshold of 1e-2, Adam's steps of ~1e-4 count as stopped from the first trained episode
    cfg = build_config(
        base, ["monitor.early_stop=true", "monitor.early_stop_patience=3", "monitor.stop_threshold=1e-2"]
    )
    Trainer(cfg, tmp_path / "r", progress=False).run()
    st = json.loads((tmp_path / "r" / "status.json").read_text())
    assert (
        st["state"] == "done" and st["early_stopped"] and st["episodes_done"] == 1 + 3
    )  # 1 untrained + patience
    assert len(pd.read_parquet(tmp_path / "r" / "metrics.parquet")) == 4


def test_monitor_on_a_shared_actor_sees_one_network_stepped_n_times(tmp_path):
    base = json.loads(json.dumps(SMALL))
    base["agent"].update(actor_update="sequential", actor_sharing="shared", actor_objective="selected")
    on = Trainer(build_config(base, ["monitor.enabled=true"]), tmp_path / "on", progress=False)
    off = Trainer(build_config(base, ["monitor.enabled=false"]), tmp_path / "off", progress=False)
    on.run()
    off.run()
    for p, q in zip(on.learner.actors.parameters(), off.learner.actors.parameters()):
        assert torch.equal(p, q)
    agents = read_agents(tmp_path / "on" / "monitor")
    actors = agents[agents.role == "actors"]
    m_on = pd.read_parquet(tmp_path / "on" / "metrics.parquet")
    assert len(actors) == int(m_on["trained"].sum())  # one network: one row per trained episode
    assert (actors["steps"] == base["env"]["n_agents"]).all()  # N steps of it per training step
    assert actors["changed"].all()


def test_non_finite_gradient_is_not_a_zero_gradient():
    """A diverged network (NaN gradients) must not be reported as a stopped one (grad_norm 0)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.Tanh())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    mon = GradientFlowMonitor()
    mon.attach("actor", net, optimizer=opt)
    mon.start_episode(0)
    loss = net(torch.randn(8, 3)).sum() * float("nan")
    opt.zero_grad()
    loss.backward()
    opt.step()
    (row,) = mon.end_episode(0)
    assert math.isnan(row["grad_norm"]) and row["steps"] == 1
