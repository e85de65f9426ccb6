"""Benchmark algorithms and baselines: heuristic orders on crafted states, the punishment path,
the baselines, and that each runs through the trainer (monitored where it learns)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ccm_madrl.agents import ALGORITHMS, BASELINES, HEURISTICS, FixedPolicy, MADDPGLearner, make_learner
from ccm_madrl.agents.config import AgentConfig
from ccm_madrl.agents.selection import heuristic_order, heuristic_select
from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.mec import MECConfig, RunRNG
from ccm_madrl.mec.dynamics import Devices, offload_time, step_dynamics

CFG = MECConfig(n_agents=4, k_channel=2, n_units=2)


def crafted():
    """4 agents; columns [power, gain, energy, size, cycle, ddl, res]."""
    s = np.zeros((1, 4, 7))
    s[0, :, 0] = [20.0, 10.0, 20.0, 5.0]  # power (dBm)
    s[0, :, 1] = [10.0, 10.0, 12.0, 6.0]  # gain (dB)
    s[0, :, 2] = 2.0
    s[0, :, 3] = [40.0, 10.0, 20.0, 30.0]  # size
    s[0, :, 4] = 500.0
    s[0, :, 5] = [0.5, 0.2, 0.8, 0.3]  # deadline
    s[0, :, 6] = 1.0
    u = np.zeros((1, 4, 3))
    u[..., 0] = 0.5  # everybody proposes
    u[..., 2] = 0.0  # rho = 0.505
    return s, u


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("deadline_divide2_size_first", [3, 0, 1, 2]),  # ddl/size = .0125 .02 .04 .01
        ("mindeadlinefirst", [1, 3, 0, 2]),
        ("maxdeadlinefirst", [2, 0, 3, 1]),
        ("minsizefirst", [1, 2, 3, 0]),
        ("maxsizefirst", [0, 3, 2, 1]),
    ],
)
def test_heuristic_orders_on_crafted_states(kind, expected):
    s, u = crafted()
    assert heuristic_order(kind, s, u, CFG)[0].tolist() == expected


def test_offloadtimefirst_orders_by_transmission_time():
    s, u = crafted()
    t = offload_time(CFG, s[0, :, 0], s[0, :, 1], s[0, :, 3], np.full(4, 0.505))
    assert heuristic_order("offloadtimefirst", s, u, CFG)[0].tolist() == np.argsort(t).tolist()
    # agent 1 (small task, strong channel) is faster than agent 3 (weak power and gain)
    assert t[1] < t[3]


@pytest.mark.parametrize("rejected, other", [("punish", 2.0), ("local", 0.0)])
def test_rejected_proposals_are_punished_or_local(rejected, other):
    s, u = crafted()  # 4 proposals > limit 2: exceeded
    x, exc = heuristic_select(s, u, "minsizefirst", 2, 400.0, CFG, rejected)
    assert exc[0]
    assert x[0].tolist() == [other, 1.0, 1.0, other]  # two smallest accepted


def test_storage_limit_in_heuristic_selection():
    s, u = crafted()
    x, _ = heuristic_select(s, u, "maxsizefirst", 4, 65.0, CFG, "punish")
    # visit 40 (accepted), 30 (70 not < 65: punished), 20 (60 < 65: accepted), 10 (70: punished)
    assert x[0].tolist() == [1.0, 2.0, 1.0, 2.0]


def test_within_limits_everybody_offloads_and_non_proposers_stay_local():
    s, u = crafted()
    u[0, 3, 0] = -0.2
    u[0, 2, 0] = -0.9
    x, exc = heuristic_select(s, u, "offloadtimefirst", 2, 400.0, CFG, "punish")
    assert not exc[0] and x[0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_punishment_reaches_the_environment_as_max_ddl_offload_time():
    s, u = crafted()
    x, _ = heuristic_select(s, u, "minsizefirst", 2, 400.0, CFG, "punish")
    dev = Devices(s[0, :, 0], s[0, :, 2], s[0, :, 1], s[0, :, 6])
    action = np.stack([x, np.full((1, 4), 0.5), np.full((1, 4), 0.505)], -1)
    out = step_dynamics(
        CFG.model_copy(update={"mode": "TOBM"}), dev, s[..., 2], s[..., 3:6], action, np.full((1, 4), 0.001)
    )
    a_power = 10 ** ((s[0, :, 0] - 30) / 10) * 0.505
    punished = x[0] == 2
    np.testing.assert_allclose(out.energy_cost[0, punished], a_power[punished] * CFG.max_ddl)
    assert (out.time[0, punished] == 1.0).all()


def test_baselines():
    cfg = MECConfig(n_agents=6, k_channel=2)
    s = np.zeros((2, 6, 7))
    s[..., 3] = 10.0
    s[0, :, 5] = [0.6, 0.2, 0.9, 0.1, 0.5, 0.3]
    s[1, :, 5] = 0.5
    rng = RunRNG("independent", 0, 37)
    a = FixedPolicy(cfg, "all_local", rng).act(s)
    assert (a.hybrid[..., 0] == 0).all() and (a.hybrid[..., 1:] == 1).all()
    g = FixedPolicy(cfg, "greedy_deadline", rng).act(s)
    assert g.exceeded.all() and np.flatnonzero(g.hybrid[0, :, 0]).tolist() == [1, 3]  # two earliest deadlines
    r = FixedPolicy(cfg, "random_selection", rng).act(s)
    assert (r.hybrid[..., 0].sum(1) == 2).all() and set(np.unique(r.hybrid[..., 0])) <= {0.0, 1.0}
    fits = FixedPolicy(MECConfig(n_agents=6), "random_selection", rng).act(s)
    assert (fits.hybrid[..., 0] == 1).all() and not fits.exceeded.any()  # 6 <= 10 channels, 60 <= 400
    with pytest.raises(ValueError, match="unknown baseline"):
        FixedPolicy(cfg, "oracle", rng)


def test_maddpg_critic_has_no_per_agent_input_and_learns():
    cfg = build_config({"agent": {"algorithm": "maddpg"}})
    learner = make_learner(cfg, RunRNG("reference", 0, 37))
    assert isinstance(learner, MADDPGLearner) and not learner.critic.per_agent
    assert learner.critic.fc1.in_features == 50 * 7 + 50 * 3
    ccm = make_learner(build_config({}), RunRNG("reference", 0, 37))
    assert ccm.critic.fc1.in_features == 50 * 10 + 10
    # same published init order: identical actors for the same seed
    for p, q in zip(learner.actors.parameters(), ccm.actors.parameters()):
        assert torch.equal(p, q)


def test_maddpg_gradients_match_naive():
    env = MECConfig(n_agents=3)
    learner = MADDPGLearner(
        env, AgentConfig(critic_hidden=(16, 8), actor_update="simultaneous"), RunRNG("reference", 0, 37)
    )
    b = 5
    g = torch.Generator().manual_seed(0)
    batch = {
        "states": torch.rand(b, 3, 7, generator=g),
        "actions": torch.rand(b, 3, 3, generator=g) * 2 - 1,
        "selected": torch.zeros(b, 3),
        "reward": -torch.rand(b, generator=g),
        "next_states": torch.rand(b, 3, 7, generator=g),
        "done": torch.zeros(b),
    }
    w = torch.linspace(0.5, 1, b)
    import copy

    naive = copy.deepcopy(learner)
    got = {}
    learner.critic_opt.register_step_pre_hook(
        lambda o, a, k: got.__setitem__("c", [p.grad.clone() for p in learner.critic.parameters()])
    )
    learner.train_step(batch, w.numpy())
    crit = naive.critic
    y = torch.stack(
        [
            batch["reward"][i]
            + 0.99
            * naive.critic_target.fc3(
                torch.relu(
                    naive.critic_target.fc2(
                        torch.relu(
                            naive.critic_target.fc1(
                                torch.cat(
                                    [
                                        batch["next_states"][i].reshape(-1),
                                        naive.actors_target(batch["next_states"][i : i + 1])[0].reshape(-1),
                                    ]
                                )
                            )
                        )
                    )
                )
            ).squeeze()
            for i in range(b)
        ]
    ).detach()
    q = torch.stack(
        [
            crit.fc3(
                torch.relu(
                    crit.fc2(
                        torch.relu(
                            crit.fc1(
                                torch.cat([batch["states"][i].reshape(-1), batch["actions"][i].reshape(-1)])
                            )
                        )
                    )
                )
            ).squeeze()
            for i in range(b)
        ]
    )
    loss = ((q * w - y * w) ** 2).mean()
    ref = torch.autograd.grad(loss, list(crit.parameters()))
    for a, r in zip(got["c"], ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("algo", ["maddpg", "minsizefirst", "all_local", "greedy_deadline"])
def test_every_algorithm_runs_through_the_trainer(tmp_path, algo):
    cfg = build_config(
        {
            "env": {"n_agents": 10, "max_steps": 4},
            "agent": {"algorithm": algo, "batch_size": 8, "critic_hidden": [32, 16]},
            "training": {"episodes": 4, "eval_episodes": 2, "tensorboard": False},
        }
    )
    t = Trainer(cfg, tmp_path / algo, progress=False)
    t.run()
    df = pd.read_parquet(tmp_path / algo / "metrics.parquet")
    assert len(df) == 4 and df["eval_return"].iloc[1:].notna().all()
    learns = algo not in BASELINES
    assert df["trained"].any() == learns
    assert ("actor_grad_norm" in df.columns) == learns  # monitored when it learns
    if not learns:
        assert df["eval_return"].iloc[1:].nunique() == 1  # a fixed policy on fixed episodes


def test_algorithm_list_is_complete():
    assert set(ALGORITHMS) == {"ccm_madrl", "maddpg", *HEURISTICS, *BASELINES}
    with pytest.raises(ValueError, match="algorithm"):
        build_config({"agent": {"algorithm": "dqn"}})
