"""The monitor inside other libraries (the ``cross`` extra): Stable-Baselines3 TD3 on Pendulum and
BenchMARL MADDPG on VMAS simple_spread at tiny budgets. The recorded measurements are checked
against direct computations on the libraries' own networks, and training with the monitor is
checked to be identical to training without it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.cross, pytest.mark.usefixtures("one_torch_thread")]


# ------------------------------------------------------------------------------ Stable-Baselines3
def _td3(seed: int = 0, actor_lr: float = 0.1):
    from stable_baselines3 import TD3

    from ccm_madrl.integrations.sb3 import separate_actor_lr

    model = TD3("MlpPolicy", "Pendulum-v1", seed=seed, learning_starts=100, device="cpu")
    separate_actor_lr(model, actor_lr)
    return model


def _grad_norm(params) -> float:
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None))


def test_sb3_td3_measurements_match_direct_computation(tmp_path):
    pytest.importorskip("stable_baselines3")
    from ccm_madrl.integrations.sb3 import MonitorCallback

    model = _td3()
    cb = MonitorCallback(run_dir=tmp_path, interval=1)
    rb, direct, last = model.replay_buffer, {}, {}
    sample = rb.sample

    def spy_sample(*a, **kw):
        batch = sample(*a, **kw)
        last["obs"] = batch.observations
        return batch

    rb.sample = spy_sample  # the test's own spy, under the callback's

    def actor_pre(opt, args, kwargs):  # registered after the monitor's hook: same gradient
        a = model.actor
        with torch.no_grad():
            z = a.mu[:-1](a.extract_features(last["obs"], a.features_extractor))
        direct[("actor", cb.session.unit)] = {
            "grad_norm": _grad_norm(a.parameters()),
            "frac_sat_exact": float((torch.tanh(z).abs() == 1).double().mean()),
            "z_mean": float(z.double().mean()),
            "frac_out_gt09": float((torch.tanh(z).abs() > 0.9).double().mean()),
        }

    def critic_pre(opt, args, kwargs):
        direct[("critic", cb.session.unit)] = {"grad_norm": _grad_norm(model.critic.parameters())}

    model.actor.optimizer.register_step_pre_hook(actor_pre)
    model.critic.optimizer.register_step_pre_hook(critic_pre)
    model.learn(300, callback=cb)
    rows = cb.session.rows
    actor_rows = [r for r in rows if r["role"] == "actor"]
    critic_rows = [r for r in rows if r["role"] == "critic"]
    assert len(critic_rows) == 200 and len(actor_rows) == 100  # TD3: the actor steps every 2nd step
    assert sum(r["frac_sat_exact"] for r in actor_rows) > 0  # lr 0.1 saturates: a real test of it
    for r in rows:
        d = direct[(r["role"], r["episode"])]
        for k, v in d.items():
            assert r[k] == pytest.approx(v, rel=1e-6, abs=1e-12), (r["role"], r["episode"], k)
    assert actor_rows[0]["lr"] == 0.1 and critic_rows[0]["lr"] == 1e-3
    assert all(r["reward_abs"] > 0 for r in rows)
    # the run-directory tables
    from ccm_madrl.monitor.integration import read_agents

    assert len(read_agents(tmp_path / "monitor")) == len(rows)
    assert (tmp_path / "monitor" / "summary.json").exists()
    assert (tmp_path / "metrics.parquet").exists()


def test_sb3_monitor_does_not_change_training(tmp_path):
    pytest.importorskip("stable_baselines3")
    from ccm_madrl.integrations.sb3 import MonitorCallback

    a = _td3(seed=3)  # one after the other: SB3 seeds the global generators at construction
    a.learn(300)
    b = _td3(seed=3)
    b.learn(300, callback=MonitorCallback(run_dir=tmp_path, interval=1))
    for net in ("actor", "critic", "actor_target", "critic_target"):
        sa, sb = getattr(a, net).state_dict(), getattr(b, net).state_dict()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (net, k)


def test_sb3_early_stop_ends_training():
    pytest.importorskip("stable_baselines3")
    from ccm_madrl.integrations.sb3 import MonitorCallback

    model = _td3(actor_lr=1.0)
    cb = MonitorCallback(interval=1, stop_threshold=math.inf, early_stop=True, early_stop_patience=3)
    model.learn(1000, callback=cb)
    assert cb.stopped_early and model.num_timesteps < 1000


def test_sac_is_watched_through_its_functional_tanh():
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import SAC

    from ccm_madrl.integrations.sb3 import MonitorCallback

    model = SAC("MlpPolicy", "Pendulum-v1", seed=0, learning_starts=50, device="cpu")
    cb = MonitorCallback(interval=1)
    model.learn(80, callback=cb)
    actor = [r for r in cb.session.rows if r["role"] == "actor"]
    assert actor and all(r["is_actor"] for r in actor)
    fr = np.array(
        [[r[k] for k in ("frac_flowing", "frac_saturated", "frac_dead", "frac_no_path")] for r in actor]
    )
    np.testing.assert_allclose(fr.sum(1), 1.0)


# ------------------------------------------------------------------------------ BenchMARL
def _maddpg(tmp_path, callbacks, seed: int = 0):
    from ccm_madrl.experiment.cross import CrossConfig
    from ccm_madrl.integrations.benchmarl import make_experiment

    c = CrossConfig(
        library="benchmarl",
        algo="maddpg",
        env="vmas/simple_spread",
        total_steps=400,
        actor_lr=0.1,
        frames_per_batch=200,
        n_envs=4,
        optimizer_steps=5,
        max_episode_steps=25,
    )
    return make_experiment(c, seed, tmp_path, callbacks)


def test_benchmarl_maddpg_measurements_match_direct_computation(tmp_path):
    pytest.importorskip("benchmarl")
    pytest.importorskip("vmas")
    from ccm_madrl.integrations.benchmarl import MonitorCallback

    cb = MonitorCallback(run_dir=tmp_path / "run", actor_lr=0.1)
    exp = _maddpg(tmp_path, [cb])
    group = "agents"
    direct, last = {}, {}
    buf = exp.replay_buffers[group]
    sample = buf.sample

    def spy_sample(*a, **kw):
        td = sample(*a, **kw)
        last["td"] = td
        return td

    buf.sample = spy_sample
    actor = exp.losses[group].actor_network
    mlp = actor.module[0]

    def actor_pre(opt, args, kwargs):
        with torch.no_grad():
            z = mlp(last["td"].clone()).get((group, "param"))
        direct[("actor/agents", cb.session.unit)] = {
            "grad_norm": _grad_norm(actor.parameters()),
            "z_mean": float(z.double().mean()),
            "frac_sat_exact": float((torch.tanh(z).abs() == 1).double().mean()),
        }

    def critic_pre(opt, args, kwargs):
        direct[("critic/agents", cb.session.unit)] = {
            "grad_norm": _grad_norm(exp.losses[group].value_network.parameters())
        }

    exp.optimizers[group]["loss_actor"].register_step_pre_hook(actor_pre)
    exp.optimizers[group]["loss_value"].register_step_pre_hook(critic_pre)
    exp.run()
    cb.finish()
    rows = cb.session.rows
    assert len(rows) == 2 * 2 * 5  # 2 iterations x 5 gradient steps x (actor, critic)
    for r in rows:
        d = direct[(r["role"], r["episode"])]
        for k, v in d.items():
            assert r[k] == pytest.approx(v, rel=1e-5, abs=1e-9), (r["role"], r["episode"], k)
    assert {r["lr"] for r in rows if r["role"] == "actor/agents"} == {0.1}
    assert (tmp_path / "run" / "monitor" / "summary.json").exists()


def test_benchmarl_monitor_does_not_change_training(tmp_path):
    pytest.importorskip("benchmarl")
    pytest.importorskip("vmas")
    from ccm_madrl.integrations.benchmarl import MonitorCallback

    plain = _maddpg(tmp_path / "a", [])
    for g in plain.group_map:  # the callback's actor lr, set without it
        for pg in plain.optimizers[g]["loss_actor"].param_groups:
            pg["lr"] = 0.1
    plain.run()
    watched = _maddpg(tmp_path / "b", [MonitorCallback(actor_lr=0.1)])
    watched.run()
    for g in plain.group_map:
        sa, sb = plain.losses[g].state_dict(), watched.losses[g].state_dict()
        tensors = [k for k in sa if isinstance(sa[k], torch.Tensor)]
        assert sa.keys() == sb.keys() and len(tensors) >= 12  # actor, critic and their targets
        for k in tensors:
            assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------------------------ runs and sweeps
def test_cross_config_validation():
    from ccm_madrl.experiment.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="cross: required"):
        build_config({"kind": "cross"})
    with pytest.raises(ConfigError, match="benchmarl supports"):
        build_config(
            {
                "kind": "cross",
                "cross": {
                    "library": "benchmarl",
                    "algo": "td3",
                    "env": "vmas/balance",
                    "total_steps": 10,
                    "actor_lr": 0.1,
                },
            }  # fmt: skip
        )
    with pytest.raises(ConfigError, match="reward_scale"):
        build_config(
            {
                "kind": "cross",
                "cross": {
                    "library": "benchmarl",
                    "algo": "maddpg",
                    "env": "vmas/balance",
                    "total_steps": 10,
                    "actor_lr": 0.1,
                    "reward_scale": 10,
                },
            }  # fmt: skip
        )
    assert build_config({}).id() == build_config({"kind": "mec"}).id()


def test_cross_sweep_store_and_report(tmp_path):
    pytest.importorskip("stable_baselines3")
    import yaml

    from ccm_madrl.cli import main
    from ccm_madrl.store import load

    sweep = {
        "name": "tiny_cross",
        "base": {
            "kind": "cross",
            "cross": {
                "library": "sb3",
                "algo": "td3",
                "env": "Pendulum-v1",
                "total_steps": 250,
                "actor_lr": 1e-3,
                "learning_starts": 50,
                "eval_every": 250,
                "eval_episodes": 1,
            },  # fmt: skip
        },
        "axes": {"cross.actor_lr": [1e-3, 1e-1]},
        "seeds": 1,
    }
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(sweep))
    out = tmp_path / "sw"
    assert main(["sweep", str(f), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    s = load(out)
    assert (s.runs["status"] == "done").all() and len(s.runs) == 2
    assert s.runs["final_return"].notna().all()
    # the same live status as MEC runs
    for st in (json.loads(p.read_text()) for p in out.rglob("status.json")):
        assert st["pid"] > 0 and st["host"] and st["heartbeat_unix"] > 0
    assert set(s.monitor["role"]) == {"actor", "critic"}
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    t1 = (tmp_path / "rep" / "tables" / "table1.csv").read_text()
    assert "Pendulum-v1" in t1 and "td3" in t1
    for fig in ("saturation", "grad_norms", "learning_curves"):  # per-unit summaries from the monitor
        assert (tmp_path / "rep" / "figures" / f"{fig}.png").exists(), fig
