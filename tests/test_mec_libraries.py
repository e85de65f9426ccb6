"""The MEC system for other MARL libraries: the PettingZoo factory with the joint state, the
Box-action view with a named master rule (the MADDPG benchmark's selection, exactly), the BenchMARL
task trained by BenchMARL's MADDPG, MASAC, IPPO and MAPPO, and the benchmark's evaluation protocol."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from ccm_madrl.agents import MADDPGLearner
from ccm_madrl.agents.config import AgentConfig
from ccm_madrl.mec import MECConfig, MECEnv, RunRNG
from ccm_madrl.mec.wrappers import MASTER_RULES, apply_master_rule, parallel_env

CFG = MECConfig(n_agents=14, max_steps=4, k_channel=3)  # 14 clients over 3 channels: limits bind


@pytest.mark.parametrize("action", ["hybrid", "box"])
def test_parallel_env_passes_the_pettingzoo_api_and_seed_tests(action):
    parallel_api_test(parallel_env(action=action, n_agents=6), num_cycles=25)
    parallel_seed_test(lambda: parallel_env(action=action, n_agents=6))


def test_state_is_the_joint_state_the_master_critic_sees():
    env = parallel_env(CFG, action="box")
    obs, _ = env.reset(seed=4)
    s = env.state()
    assert env.state_space.shape == (14 * 7,) and env.state_space.contains(s)
    np.testing.assert_array_equal(s.reshape(14, 7), np.stack([obs[a] for a in env.possible_agents]))
    hybrid = parallel_env(CFG)
    hybrid.reset(seed=4)
    np.testing.assert_allclose(hybrid.state(), s, rtol=1e-6)  # float64 view, same numbers


@pytest.mark.parametrize("rule", ["maddpg", "mindeadlinefirst", "maxsizefirst+local"])
def test_box_step_applies_the_maddpg_benchmarks_selection_exactly(rule):
    """The Box view's step = the MADDPG benchmark learner's greedy action on the same actor outputs."""
    order, rejected = MASTER_RULES[rule]
    learner = MADDPGLearner(
        CFG, AgentConfig(algorithm="maddpg"), RunRNG("reference", 0, 37), order=order, rejected=rejected
    )
    env = parallel_env(CFG, action="box", master_rule=rule)
    core = MECEnv(CFG)
    obs, _ = env.reset(seed=9)
    state = core.reset(seed=9)
    punished = exceeded = 0
    for _ in range(CFG.max_steps):
        u = learner.policy(state)  # the benchmark's actor outputs (1, N, 3)
        act = learner.act(state, explore=False)
        obs, rewards, _, _, infos = env.step(
            {a: u[0, i].astype(np.float32) for i, a in enumerate(env.agents)}
        )
        state, r, _, _ = core.step(act.hybrid)
        x = np.array([infos[a]["offload"] for a in env.possible_agents])
        np.testing.assert_array_equal(x, act.selected[0])
        np.testing.assert_allclose(rewards["client_0"], r[0], rtol=1e-5)
        punished += int((x == 2).sum())
        exceeded += int(infos["client_0"]["exceeded"])
    assert exceeded > 0  # the rule was exercised
    assert (punished > 0) == (rejected == "punish") or exceeded == 0


def test_a_bad_master_rule_or_action_names_the_field():
    with pytest.raises(ValueError, match=r"master_rule: unknown rule 'fifo'; allowed: maddpg, "):
        parallel_env(action="box", master_rule="fifo")
    with pytest.raises(ValueError, match=r"action: must be 'hybrid' or 'box'"):
        parallel_env(action="discrete")
    env = parallel_env(action="box", n_agents=2)
    env.reset()
    with pytest.raises(ValueError, match=r"actions: each agent's action must have shape \(3,\)"):
        env.step({a: np.zeros(2) for a in env.agents})


def test_apply_master_rule_maps_actor_outputs_like_the_learners():
    states = MECEnv(CFG, 2).reset(seed=[1, 2])
    u = np.tile([1.0, -1.0, 1.0], (2, 14, 1))  # everybody proposes, alpha = 0.01, rho = 1
    hybrid, exceeded = apply_master_rule("maddpg", states, u, CFG)
    assert exceeded.all() and (hybrid[..., 0] == 1).sum(-1).max() <= 3  # at most k_channel accepted
    assert set(np.unique(hybrid[..., 0])) <= {1.0, 2.0}  # the rest punished
    np.testing.assert_allclose(hybrid[..., 1], 0.01) and np.testing.assert_allclose(hybrid[..., 2], 1.0)


def test_the_benchmarks_evaluation_is_the_trainers_protocol(tmp_path):
    """evaluate() on a trainer's learner gives the trainer's own eval_return (same fixed episodes)."""
    from ccm_madrl.experiment import Trainer, build_config
    from ccm_madrl.integrations.mec_benchmark import evaluate

    cfg = build_config(
        {
            "env": {"n_agents": 5, "max_steps": 3},
            "agent": {"algorithm": "greedy_deadline"},
            "training": {"episodes": 2, "eval_episodes": 6, "tensorboard": False},
            "monitor": {"enabled": False},
        }
    )
    t = Trainer(cfg, tmp_path / "r", progress=False, quiet=True)
    t.run()
    got = evaluate(lambda s: t.learner.act(s, explore=False).hybrid, cfg.env, cfg.rng_mode, cfg.env_seed, 6)
    assert got["eval_return"] == pytest.approx(
        t.rows[1]["eval_return"], rel=1e-12
    )  # evaluated from episode 1
    assert len(got["returns"]) == 6


# ------------------------------------------------------------------------------ BenchMARL
@pytest.mark.cross
@pytest.mark.parametrize("algo", ["maddpg", "masac", "ippo", "mappo"])
def test_benchmarl_algorithms_train_on_the_mec_task(algo, tmp_path):
    pytest.importorskip("benchmarl")
    from ccm_madrl.integrations.benchmarl import MECTask, make_mec_experiment, policy_fn

    task = MECTask.OFFLOADING.get_task({"n_agents": 4, "max_steps": 5, "k_channel": 2})
    exp = make_mec_experiment(
        algo,
        task,
        0,
        tmp_path,
        max_frames=40,
        frames_per_batch=20,
        optimizer_steps=2,
        minibatch_iters=2,
        minibatch_size=10,
        train_batch_size=16,
    )
    before = [p.detach().clone() for p in exp.policy.parameters()]
    exp.run()
    assert exp.n_iters_performed == 2 and exp.total_frames == 40
    assert any(not torch_equal(a, b) for a, b in zip(before, exp.policy.parameters()))  # it trained
    u = policy_fn(exp)(MECEnv(MECConfig(n_agents=4, max_steps=5), 3).reset(seed=[0, 1, 2]))
    assert u.shape == (3, 4, 3) and np.abs(u).max() <= 1.0


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a.detach(), b.detach()))


@pytest.mark.cross
def test_the_benchmarl_task_has_the_state_and_the_yaml_defaults():
    pytest.importorskip("benchmarl")
    from ccm_madrl.integrations.benchmarl import MECTask

    task = MECTask.OFFLOADING.get_from_yaml()
    assert task.config["n_agents"] == 50 and task.config["master_rule"] == "maddpg"
    small = MECTask.OFFLOADING.get_task({"n_agents": 3, "max_steps": 2})
    env = small.get_env_fun(1, True, 0, "cpu")()
    assert small.group_map(env) == {"client": ["client_0", "client_1", "client_2"]}
    assert small.state_spec(env)["state"].shape[-1] == 21 and small.max_steps(env) == 2
    assert small.action_spec(env)["client", "action"].shape == (3, 3)
    td = env.rollout(2)
    assert td["next", "done"][-1].all() and td["state"].shape == (2, 21)
    with pytest.raises(ValueError, match=r"n_agents"):
        MECTask.OFFLOADING.get_task({"n_agents": 0})
    with pytest.raises(ValueError, match=r"master_rule: unknown rule 'x'"):
        MECTask.OFFLOADING.get_task({"master_rule": "x"})


@pytest.mark.cross
def test_the_benchmark_command_writes_its_tables_and_skips_finished_runs(tmp_path, capsys):
    pytest.importorskip("benchmarl")
    import json

    import pandas as pd

    from ccm_madrl.integrations.mec_benchmark import main

    out = tmp_path / "out"
    argv = [
        "--out", str(out), "--work", str(tmp_path / "work"), "--frames", "20", "--n-agents", "3",
        "--max-steps", "5", "--eval-episodes", "4", "--seeds", "0", "1",
        "--methods", "all_local", "rule:maddpg", "maddpg", "benchmarl_mappo",
        "--on-policy-frames-per-batch", "10", "--on-policy-minibatch", "5",
    ]  # fmt: skip
    assert main(argv) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8 and set(runs["method"]) == {"all_local", "rule:maddpg", "maddpg", "benchmarl_mappo"}
    summary = pd.read_csv(out / "summary.csv").set_index("method")
    assert summary.loc["maddpg", "seeds"] == 2
    # a non-learning policy gives the same return whatever the seed
    assert runs[runs.method == "all_local"]["eval_return"].nunique() == 1
    assert "| maddpg |" in (out / "summary.md").read_text()
    bench = json.loads((out / "benchmark.json").read_text())
    assert bench["settings"]["frames"] == 20 and "commit" in bench["provenance"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    capsys.readouterr()
    assert main(argv) == 0  # everything finished with these settings: nothing runs again
    assert "seed" not in capsys.readouterr().out.split("method")[0]
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
