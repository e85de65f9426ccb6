"""The ``published_code: 44fba1b`` preset and its options, each against a naive per-sample
implementation of the published repository's first commit (written here, loop by loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccm_madrl.agents import AgentConfig, CCMLearner, MADDPGLearner
from ccm_madrl.cli import main
from ccm_madrl.experiment import build_config
from ccm_madrl.experiment.config import ConfigError
from ccm_madrl.mec import MECConfig, MECEnv, RunRNG
from ccm_madrl.mec.dynamics import Devices
from test_learner import B, N, actor_out, make_batch, q_full, step_beside_naive_critic

ZS, ZA = torch.zeros(7), torch.zeros(3)


def naive_44fba1b_actor_loss(learner, batch, w, joint="next", rows="selected"):
    """The first commit's actor loss, per sample: max over the stored selection (or the current
    proposers) of Q(S'_b or S_b, U_b, s_bj, u_bj) * w_b, the fake agent when there is none."""
    out = []
    for b in range(B):
        S = batch["states"][b]
        SJ = batch["next_states"][b] if joint == "next" else S
        U = torch.stack([actor_out(learner.actors, j, S[j]) for j in range(N)])
        if rows == "selected":
            cand = [j for j in range(N) if batch["selected"][b, j] == 1]
        else:
            cand = [j for j in range(N) if U[j, 0] >= 0]
        qs = [q_full(learner.critic, SJ, U, S[j], U[j]) * w[b] for j in cand]
        out.append(max(qs) if qs else q_full(learner.critic, SJ, U, ZS, ZA) * w[b])
    return -torch.stack(out).mean()


@pytest.mark.parametrize("objective", ["selected", "proposers"])
def test_next_joint_states_actor_loss_matches_a_per_sample_loop(objective):
    cfg = AgentConfig(
        batch_size=B, critic_hidden=(32, 16), actor_objective=objective, actor_joint_states="next"
    )
    learner = CCMLearner(MECConfig(n_agents=N), cfg, RunRNG("reference", 3, 37))
    batch = make_batch(5, none_selected=(1, 3))
    w = torch.linspace(0.3, 1.0, B)
    u = learner.actors(batch["states"])
    got = learner.actor_objective(batch["states"], u, w, batch["selected"], batch["next_states"])
    ref = naive_44fba1b_actor_loss(learner, batch, w, "next", objective)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    params = list(learner.actors.parameters())
    for a, r in zip(torch.autograd.grad(got, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-7)
    # and the option matters: the current joint states give another loss
    cur = learner.actor_objective(batch["states"], u, w, batch["selected"])
    assert abs(float(cur.detach()) - float(got.detach())) > 1e-6


def test_44fba1b_training_step_matches_the_published_loop():
    """Shared actor, N steps of one optimiser, stored-selection max with the next joint states."""
    cfg = AgentConfig(
        batch_size=B, critic_hidden=(32, 16), actor_lr=1e-2, critic_lr=1e-2,
        actor_sharing="shared", actor_objective="selected", actor_joint_states="next",
    )  # fmt: skip
    learner = CCMLearner(MECConfig(n_agents=N), cfg, RunRNG("reference", 0, 37))
    batch = make_batch(7, none_selected=(0, 4))
    naive, w = step_beside_naive_critic(learner, batch, np.linspace(0.4, 1.0, B))
    opt = torch.optim.Adam(naive.actors.parameters(), lr=1e-2)  # one network, one optimiser state
    for _ in range(N):  # the loop variable reused: N steps of the last client's optimiser
        opt.zero_grad()
        naive_44fba1b_actor_loss(naive, batch, w, "next", "selected").backward()
        opt.step()
    for a, b in zip(learner.actors.parameters(), naive.actors.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
    for a, b in zip(learner.actors.parameters(), learner.actors_target.parameters()):
        assert torch.equal(a, b)


def test_maddpg_next_joint_states_actor_loss():
    cfg = AgentConfig(algorithm="maddpg", critic_hidden=(16, 8), actor_joint_states="next")
    learner = MADDPGLearner(MECConfig(n_agents=3), cfg, RunRNG("reference", 0, 37))
    g = torch.Generator().manual_seed(1)
    s, s2 = torch.rand(5, 3, 7, generator=g), torch.rand(5, 3, 7, generator=g)
    w = torch.linspace(0.5, 1, 5)
    u = learner.actors(s)
    got = learner.actor_objective(s, u, w, None, s2)
    c = learner.critic
    ref = -torch.stack(
        [
            c.fc3(
                torch.relu(c.fc2(torch.relu(c.fc1(torch.cat([s2[b].reshape(-1), u[b].reshape(-1)])))))
            ).squeeze()
            * w[b]
            for b in range(5)
        ]
    ).mean()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert abs(float(learner.actor_objective(s, u, w).detach()) - float(got.detach())) > 1e-6


def test_unclipped_reset_energy_on_crafted_batteries():
    """44fba1b's reset assigns the clipped energies to a misspelt attribute: batteries outside
    [min_ene, max_ene] stay as they are; the current code clips them."""
    dev = Devices(
        power=np.full(3, 10.0),
        initial_energy=np.array([0.2, 1.0, 5.0]),
        gain=np.full(3, 8.0),
        res=np.full(3, 1.0),
    )
    for clip, expect in ((True, [0.5, 1.0, 3.2]), (False, [0.2, 1.0, 5.0])):
        cfg = MECConfig(n_agents=3, reset_energy_clip=clip)
        env = MECEnv(cfg, 1, "independent", 37, devices=dev)
        np.testing.assert_array_equal(env.reset(seed=1)[0, :, 2], expect)
    # with the published draws (inside the range) the two resets are identical
    a = MECEnv(MECConfig(), 1, "reference", 37).reset(seed=5)
    b = MECEnv(MECConfig(reset_energy_clip=False), 1, "reference", 37).reset(seed=5)
    np.testing.assert_array_equal(a, b)


def test_preset_sets_every_option_and_the_default_stays_golden():
    d = build_config({})
    assert d.published_code is None
    assert (
        d.agent.variant.actor_sharing,
        d.agent.variant.actor_objective,
        d.agent.variant.actor_joint_states,
    ) == (
        "independent",
        "proposers",
        "current",
    )
    assert d.env.reset_energy_clip and d.rng_mode == "reference"
    p = build_config({"published_code": "44fba1b"})
    assert (p.agent.variant.actor_sharing, p.agent.variant.actor_update) == ("shared", "sequential")
    assert (p.agent.variant.actor_objective, p.agent.variant.actor_joint_states) == ("selected", "next")
    assert p.env.reset_energy_clip is False
    assert p.id() != d.id()
    # the benchmarks: shared actors and next joint states, no selection maximum
    m = build_config({"published_code": "44fba1b", "agent": {"algorithm": "maddpg"}})
    assert (
        m.agent.variant.actor_sharing,
        m.agent.variant.actor_joint_states,
        m.agent.variant.actor_objective,
    ) == (
        "shared",
        "next",
        "proposers",
    )
    # restating a preset value is fine
    assert build_config({"published_code": "44fba1b", "agent": {"actor_sharing": "shared"}}).id() == p.id()


def test_preset_conflicts_name_the_field(capsys):
    with pytest.raises(
        ConfigError, match=r"agent\.variant\.actor_joint_states: published_code 44fba1b sets 'next'"
    ):
        build_config({"published_code": "44fba1b", "agent": {"actor_joint_states": "current"}})
    with pytest.raises(ConfigError, match="published_code: must be one of"):
        build_config({"published_code": "abc1234"})
    rc = main(["train", "--set", "published_code=44fba1b", "--set", "env.reset_energy_clip=true"])
    assert rc == 2
    assert "env.reset_energy_clip: published_code 44fba1b sets False" in capsys.readouterr().err


def test_preset_benchmark_shares_one_actor_stepped_n_times():
    from ccm_madrl.agents import make_learner

    cfg = build_config(
        {
            "published_code": "44fba1b",
            "env": {"n_agents": N},
            "agent": {"algorithm": "maddpg", "batch_size": B, "critic_hidden": [16, 8]},
        }
    )
    learner = make_learner(cfg, RunRNG("reference", 0, 37))
    assert isinstance(learner, MADDPGLearner) and learner.actors.fc1.weight.shape[0] == 1
    before = [p.detach().clone() for p in learner.actors.parameters()]
    learner.train_step(make_batch(3), np.ones(B))
    assert int(learner.actor_opt.steps[0]) == N
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.actors.parameters()))
