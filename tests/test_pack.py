"""Packed runs: R runs trained as one program give each run's trajectory alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ccm_madrl.agents import make_learner
from ccm_madrl.agents.pack import make_pack
from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.experiment.pack import PackTrainer, pack_key
from ccm_madrl.mec.rng import RunRNG
from ccm_madrl.parity import golden_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # exactness at one thread (conftest)

SMALL = {
    "env": {"n_agents": 12, "max_steps": 4},
    "agent": {"batch_size": 16, "critic_hidden": [64, 32]},
    "training": {"episodes": 20, "eval_episodes": 3, "checkpoint_every": 5, "tensorboard": False},
    "monitor": {"enabled": False},
}
LRS = [(1e-4, 1e-3), (1e-3, 1e-2), (1e-2, 1e-3), (3e-4, 3e-3)]


def configs(update="simultaneous", rng_mode="reference", episodes=20, **agent) -> list:
    out = []
    for seed, (a, c) in enumerate(LRS):
        d = json.loads(json.dumps(SMALL))
        d["agent"].update(actor_update=update, actor_lr=a, critic_lr=c, **agent)
        d["training"]["episodes"] = episodes
        d.update(seed=seed, rng_mode=rng_mode, name=f"r{seed}")
        out.append(build_config(d))
    return out


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


# Bounds of the first training step, pack against alone (measured on two CPU code paths:
# benchmarks/results/pack_tolerances_{default,avx2}.json, scripts/pack_tolerance_probe.py; docs/reliability.md,
# "Differences expected between machines"). A pack batches R runs, so float32 sums run in another order:
# the gradients of the first actor step (identical weights) agree to a few float32 ulps of the
# reduction, norm-wise; GRAD_RTOL. Later steps of the same training step start from weights that
# already differ by the first step's noise, and Adam's m (a sum of them) and v (of their squares,
# twice the relative error) inherit it: LATER_RTOL, 2 x LATER_RTOL.
GRAD_RTOL = 1e-6
LATER_RTOL = 1e-5
# Weights after an Adam step are NOT relatively close: Adam's first update is g / (|g| + eps), about
# sign(g), whatever |g| is, so an element whose gradient is float noise around 0 may move by +lr in
# one and -lr in the other (2 lr apart), and a tensor whose entries are all ~lr (a bias starting at 0)
# then differs by ~100 % relative. The bound is in units of the step: |w_pack - w_alone| <= 2 lr per
# Adam step the tensor took in the training step (the update of one step has |u| <= 1). To still
# catch a wrong update (a wrong lr, a step applied twice, another run's gradient), at most
# FLIP_FRAC of a tensor's elements may differ by more than 1e-3 lr: only elements whose gradient is
# float noise around 0 can flip (measured: none beyond 1.5e-4 lr on either code path).
FLIP_FRAC = 0.01


def assert_step_close(alone, pack, lr: float, steps: int, what) -> None:
    """Weights (or targets) after a training step of ``steps`` Adam steps: the bound above."""
    a, p = np.asarray(alone, dtype=float), np.asarray(pack, dtype=float)
    diff = np.abs(a - p)
    ulps = 1e-6 * np.abs(a).max(initial=0.0)  # float32 rounding of the weights themselves (~8 ulp)
    assert diff.max(initial=0.0) <= 2 * lr * steps + ulps, (what, diff.max() / lr, "lr")
    assert (diff > 1e-3 * lr).mean() <= FLIP_FRAC if diff.size else True, (what, (diff > 1e-3 * lr).mean())


def test_the_step_bound_fails_a_wrong_update():
    """assert_step_close catches what the pack could get wrong: a step applied twice, the wrong lr."""
    rs = np.random.default_rng(0)
    w0, lr = rs.normal(size=(64, 32)), 1e-3
    step = lr * np.sign(rs.normal(size=w0.shape))
    assert_step_close(w0 + step, w0 + step + rs.normal(size=w0.shape) * 1e-9, lr, 1, "noise")
    flips = (w0 + step).copy()
    flips.flat[:5] -= 2 * step.flat[:5]  # a few near-zero gradients changed sign: allowed
    assert_step_close(w0 + step, flips, lr, 1, "flips")
    for wrong in (w0 + 2 * step, w0 + 10 * step, w0 - step):
        with pytest.raises(AssertionError):
            assert_step_close(w0 + step, wrong, lr, 1, "wrong")


# 20 episodes, pack against alone: the weights part by float32 noise amplified by Adam (up to 2 lr
# per step on elements whose gradient is noise around 0, above), and the trajectories follow them
# continuously while every selection is the same (the constraint fractions are compared exactly: a
# flipped selection moves a return by ~1e-3 relative or more). Measured on two CPU code paths
# (benchmarks/results/pack_tolerances_*.json): returns <= 1.5e-7, losses and Q <= 5.2e-6; bounds
# 1e-5 (returns) and 1e-4 (losses: means over batches of per-run sums), about 60x and 20x those.
COLUMNS = {"eval_return": 1e-5, "train_return": 1e-5, "critic_loss": 1e-4, "actor_loss": 1e-4, "q_mean": 1e-4}


@pytest.mark.parametrize(
    "update,rng_mode",
    [("simultaneous", "reference"), ("sequential", "reference"), ("simultaneous", "independent")],
)
def test_a_pack_gives_each_run_its_trajectory_alone(tmp_path, update, rng_mode):
    """4 runs (different seeds and learning rates) in one pack: every run's metrics over 20 episodes
    equal those of the same run trained alone (selections identical: the constraint fractions
    exactly; returns and losses within COLUMNS, relative)."""
    cfgs = configs(update, rng_mode)
    PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()
    for c in cfgs:
        assert_like_alone(tmp_path, c, 20)


def assert_like_alone(tmp_path, c, episodes: int) -> pd.DataFrame:
    """Run ``c`` alone into ``tmp_path/alone`` and compare its metrics with its run in
    ``tmp_path/pack``: the same selections (constraint fractions exactly), the same missing values,
    COLUMNS within their bounds; returns the pack's metrics."""
    Trainer(c, tmp_path / "alone" / c.name, progress=False, quiet=True).run()
    a = pd.read_parquet(tmp_path / "alone" / c.name / "metrics.parquet")
    p = pd.read_parquet(tmp_path / "pack" / c.name / "metrics.parquet")
    assert len(a) == len(p) == episodes
    np.testing.assert_array_equal(a["trained"], p["trained"])
    np.testing.assert_array_equal(a["eval_constraint_frac"].fillna(-1), p["eval_constraint_frac"].fillna(-1))
    np.testing.assert_array_equal(a["train_constraint_frac"], p["train_constraint_frac"])
    for col, tol in COLUMNS.items():
        x, y = a[col].to_numpy(), p[col].to_numpy()
        assert np.array_equal(np.isnan(x), np.isnan(y)), col
        ok = ~np.isnan(x)
        assert rel(x[ok], y[ok]) < tol, (c.name, col, rel(x[ok], y[ok]))
    return p


def test_the_controls_pack_like_the_published_networks(tmp_path):
    """A bounded critic output and straight-through clipped actors (configs/controls) in a pack:
    each run's 8 episodes equal the run alone to 1e-6."""
    cfgs = configs("sequential", episodes=8, architecture={"critic_output": "tanh_scaled", "critic_output_scale": 5.0,
                                                           "activation": "linear_clip"})  # fmt: skip
    PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()
    for c in cfgs:
        Trainer(c, tmp_path / "alone" / c.name, progress=False, quiet=True).run()
        a = pd.read_parquet(tmp_path / "alone" / c.name / "metrics.parquet")
        p = pd.read_parquet(tmp_path / "pack" / c.name / "metrics.parquet")
        assert c.agent.architecture.critic_output == "tanh_scaled"
        assert rel(a["eval_return"].iloc[1:], p["eval_return"].iloc[1:]) < 1e-6
        assert rel(a["q_mean"].dropna(), p["q_mean"].dropna()) < 1e-4
        assert float(p["q_mean"].abs().max()) <= 5.0  # bounded (reached in float32: 5 * tanh(large) == 5)


def _learners(cfgs):
    return [make_learner(c, RunRNG(c.rng_mode, c.seed, c.env_seed), "cpu") for c in cfgs]


def first_training_step(update: str, algorithm: str, sharing: str):
    """The 4 runs of ``configs`` alone and as one pack, the same replay contents, one training step:
    (configs, learners alone, pack, actor gradients {"alone": [(run, agents, grads)], "pack":
    [(agents, grads)]} from the optimisers' step hooks, statistics alone, statistics of the pack).
    Also measured by scripts/pack_tolerance_probe.py."""
    cfgs = configs(update, actor_sharing=sharing, algorithm=algorithm)
    alone, pack = _learners(cfgs), make_pack(_learners(cfgs))
    grads = {"alone": [], "pack": []}
    for i, a in enumerate(alone):
        a.actor_opt.register_step_pre_hook(
            lambda o, g, ag, i=i: grads["alone"].append((i, ag, [x.clone() for x in g]))
        )
    pack.actor_opt.register_step_pre_hook(lambda o, g, ag: grads["pack"].append((ag, [x.clone() for x in g])))
    rs = np.random.default_rng(0)
    layout = alone[0].transition_layout()
    for _ in range(3):
        tr = {k: rs.normal(size=(4, 4, *shape)) for k, shape in layout.items()}
        tr["selected"] = (rs.random((4, 4, 12)) < 0.3).astype(float)
        tr["done"][:] = 0.0
        for i, a in enumerate(alone):
            a.observe({k: v[i] for k, v in tr.items()})
        pack.observe(tr)
    return cfgs, alone, pack, grads, [a.train() for a in alone], pack.train()


@pytest.mark.parametrize(
    "update,algorithm,sharing",
    [
        ("simultaneous", "ccm_madrl", "independent"),
        ("sequential", "ccm_madrl", "independent"),
        ("sequential", "ccm_madrl", "shared"),
        ("sequential", "maddpg", "independent"),
    ],
)
def test_the_first_training_step_equals_each_run_alone(update, algorithm, sharing):
    """Same replay contents, one training step: the gradients (through the optimiser's step hook),
    statistics and priorities of every run in the pack equal the run alone to GRAD_RTOL norm-wise
    (later actor steps, Adam's m and v: LATER_RTOL), the weights and targets after the step within
    the step bound of assert_step_close (in units of lr, not relative: see above)."""
    cfgs, alone, pack, grads, st_alone, st_pack = first_training_step(update, algorithm, sharing)
    k = pack.actors.nets_per_run
    # Adam steps per actor tensor in one training step: a shared network is stepped once per client
    # in the sequential update, every other tensor once
    actor_steps = cfgs[0].env.n_agents if (update, sharing) == ("sequential", "shared") else 1
    for i, a in enumerate(alone):
        sd_a, sd_p = a.state_dict(), pack.run_state_dict(i)
        lrs = {"actors": (cfgs[i].agent.actor_lr, actor_steps), "critic": (cfgs[i].agent.critic_lr, 1)}
        for key in ("actors", "critic", "actors_target", "critic_target"):
            lr, steps = lrs[key.removesuffix("_target")]
            for name, v in sd_a[key].items():
                if v is not None:
                    assert_step_close(v, sd_p[key][name], lr, steps, (i, key, name))
        for name, tol in (("m", LATER_RTOL), ("v", 2 * LATER_RTOL)):
            for x, y in zip(sd_a["actor_opt"][name], sd_p["actor_opt"][name]):
                assert rel(x, y) < tol, (i, name, rel(x, y))
        # priorities |TD error| + eps of the first step (identical weights): norm-wise, as the gradients
        # (a TD error near 0 has no relative precision of its own)
        assert rel(sd_a["replay"]["tree"], sd_p["replay"]["tree"]) < GRAD_RTOL, i
        for key in ("critic_loss", "q_mean", "target_mean", "batch_reward_abs"):
            assert rel(st_alone[i][key], st_pack[i][key]) < GRAD_RTOL, (i, key)
        # the actor loss of the sequential update is summed over its steps: the later steps' bound
        assert rel(st_alone[i]["actor_loss"], st_pack[i]["actor_loss"]) < LATER_RTOL, i
        mine = [g for j, _, g in grads["alone"] if j == i]
        assert len(mine) == len(grads["pack"])
        for step, (ga, (_, gp)) in enumerate(zip(mine, grads["pack"])):
            for x, y in zip(ga, gp):
                r = rel(x, y[i * k : (i + 1) * k])
                assert r < (GRAD_RTOL if step == 0 else LATER_RTOL), (i, step, r)
    # the run's checkpoint format is the single-run format: a learner alone loads it
    fresh = _learners(cfgs[:1])[0]
    fresh.load_state_dict(pack.run_state_dict(0))
    assert_step_close(
        fresh.critic.fc1.weight.detach(),
        alone[0].critic.fc1.weight.detach(),
        cfgs[0].agent.critic_lr,
        1,
        "load",
    )


def test_pack_key_groups_runs_that_differ_only_in_per_run_scalars():
    a, b, c, d = configs()
    assert pack_key(a) == pack_key(b) == pack_key(d)
    other = build_config({**json.loads(json.dumps(SMALL)), "agent": {**SMALL["agent"], "gamma": 0.9}})
    assert pack_key(other) != pack_key(a)
    with pytest.raises(ValueError, match="differ"):
        PackTrainer([a, other], ["x", "y"])


def test_the_golden_vectors_hold_for_a_run_inside_a_pack(agent_golden):
    """The published golden step (N = 50, batch 64, sequential) for run 1 of a pack of 4 (the others:
    other seeds and learning rates, on the same batch): its weights after the step equal the lone
    learner's (which passes the golden check, test_agent_golden.py) and the golden's own."""
    from ccm_madrl.agents import AgentConfig, CCMLearner
    from ccm_madrl.mec import MECConfig

    with np.load(agent_golden) as z:
        d = {k: z[k] for k in z.files}
    seed = int(d["torch_seed"])

    def golden_learner(actor_lr=1e-4, critic_lr=1e-3, torch_seed=seed):
        cfg = AgentConfig(actor_lr=actor_lr, critic_lr=critic_lr, actor_update="sequential")
        return CCMLearner(MECConfig(), cfg, RunRNG("reference", torch_seed, 37))

    def load_init(lr):
        for i in range(50):
            lr.actors.load_agent_state_dict(
                i,
                {
                    p: d[f"init/actor{i}.{p}"]
                    for p in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")
                },
            )
        lr.critic.load_state_dict({p: torch.as_tensor(d[f"init/critic.{p}"]) for p in lr.critic.state_dict()})
        lr.actors_target.load_state_dict(lr.actors.state_dict())
        lr.critic_target.load_state_dict(lr.critic.state_dict())
        return lr

    alone = load_init(golden_learner())
    members = [
        golden_learner(1e-3, 1e-2, 5),
        load_init(golden_learner()),
        golden_learner(1e-2, 1e-4, 6),
        golden_learner(3e-4, 3e-3, 7),
    ]
    pack = make_pack(members)
    batch = golden_batch(d, 64)
    w = d["batch/is_weights"]
    g_alone, g_pack = {}, {}
    alone.critic_opt.register_step_pre_hook(
        lambda o, a, k: g_alone.update({n: p.grad.clone() for n, p in alone.critic.named_parameters()})
    )
    pack.critic_opt.register_step_pre_hook(
        lambda o, g, a: g_pack.update(
            {n: x[1].clone() for (n, _), x in zip(pack.critic.named_parameters(), g)}
        )
    )
    st_alone = alone.train_step(batch, w)
    st_pack = pack.train_step(
        {k: v.repeat(4, *([1] * (v.dim() - 1))) for k, v in batch.items()}, np.tile(w, 4)
    )
    np.testing.assert_allclose(st_pack["errors"][64:128], st_alone["errors"], rtol=1e-6)
    np.testing.assert_allclose(st_pack["errors"][64:128], d["priority_errors"], rtol=1e-4)
    sd = pack.run_state_dict(1)
    from ccm_madrl.parity import AFTER_ATOL, TINY_GRAD

    for name, v in alone.state_dict()["critic"].items():
        g = g_alone[name]
        assert rel(g, g_pack[name].reshape(g.shape)) < 1e-5, name
        # Adam's first step is lr * sign(g) for all but tiny gradients: compare the weights where the
        # gradient is not tiny (the golden check's own rule)
        diff = (v - sd["critic"][name]).abs()
        assert not ((diff > AFTER_ATOL) & (g.abs() >= TINY_GRAD)).any(), name
    for name, v in alone.state_dict()["actors"].items():
        assert rel(v, sd["actors"][name]) < 1e-6, name
    got = pack.runs[1].actors.agent_state_dict(49)["fc1.weight"].numpy()
    np.testing.assert_allclose(got, d["after/actor49.fc1.weight"], rtol=1e-4, atol=1e-6)


def test_a_killed_pack_resumes_each_run_from_its_checkpoint(tmp_path, monkeypatch):
    """A pack that dies after episode 12 (checkpoints every 5) resumes each run from episode 10 and
    ends with the metrics of an uninterrupted pack, bit for bit; a run already done is skipped."""
    cfgs = configs("sequential", episodes=16)
    dirs = lambda root: [tmp_path / root / c.name for c in cfgs]  # noqa: E731
    PackTrainer(cfgs, dirs("whole")).run()
    real = PackTrainer.episode

    def dying(self, ep):
        if ep == 12:
            raise RuntimeError("killed")
        return real(self, ep)

    monkeypatch.setattr(PackTrainer, "episode", dying)
    with pytest.raises(RuntimeError, match="killed"):
        PackTrainer(cfgs, dirs("cut")).run()
    for d in dirs("cut"):
        st = json.loads((d / "status.json").read_text())
        assert st["state"] == "failed" and st["episodes_done"] == 12
    monkeypatch.setattr(PackTrainer, "episode", real)
    summaries = PackTrainer(cfgs, dirs("cut")).run()
    assert [s.episodes_done for s in summaries] == [16] * 4
    for a, b in zip(dirs("whole"), dirs("cut")):
        x, y = pd.read_parquet(a / "metrics.parquet"), pd.read_parquet(b / "metrics.parquet")
        cols = [c for c in x.columns if not c.startswith("time_")]
        pd.testing.assert_frame_equal(x[cols], y[cols])
        prov = json.loads((b / "provenance.json").read_text())
        assert prov["pack"]["size"] == 4 and prov["pack"]["members"] == [c.name for c in cfgs]
        assert [s["resumed_from_episode"] for s in prov["segments"]] == [0, 10]
    again = PackTrainer(cfgs, dirs("cut")).run()  # everything done: skipped
    assert all(s.wall_time_s == 0.0 for s in again)


def test_a_diverging_run_is_dropped_and_the_others_go_on(tmp_path, monkeypatch):
    """NaN forced into run 2's critic at episode 7: run 2 ends diverged with its first 7 episodes
    written, the other three finish with the trajectories they have alone."""
    cfgs = configs("simultaneous", episodes=12)
    real = PackTrainer.episode

    def poisoned(self, ep):
        if ep == 7:
            i = [m.cfg.name for m in self.members].index("r2")
            with torch.no_grad():
                self.pack.critic.fc2.weight[i] = float("nan")
        return real(self, ep)

    monkeypatch.setattr(PackTrainer, "episode", poisoned)
    summaries = PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()
    assert [s.state for s in summaries] == ["done", "done", "diverged", "done"]
    st = json.loads((tmp_path / "pack" / "r2" / "status.json").read_text())
    assert st["state"] == "diverged" and "diverged in episode 7" in st["error"] and st["episodes_done"] == 7
    m = pd.read_parquet(tmp_path / "pack" / "r2" / "metrics.parquet")
    assert m["episode"].tolist() == list(range(7))  # written, although the last checkpoint was after 5
    again = PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()  # not run again
    assert [s.state for s in again] == ["done", "done", "diverged", "done"]
    assert all(s.wall_time_s == 0.0 for s in again)
    for c in cfgs:
        if c.name == "r2":
            continue
        Trainer(c, tmp_path / "alone" / c.name, progress=False, quiet=True).run()
        a = pd.read_parquet(tmp_path / "alone" / c.name / "metrics.parquet")
        p = pd.read_parquet(tmp_path / "pack" / c.name / "metrics.parquet")
        assert len(p) == 12
        assert rel(a["eval_return"].iloc[1:], p["eval_return"].iloc[1:]) < 1e-6
        assert json.loads((tmp_path / "pack" / c.name / "status.json").read_text())["state"] == "done"


def test_a_run_whose_actions_are_not_finite_is_dropped_and_the_others_go_on(tmp_path, monkeypatch):
    """NaN forced into run 1's actors at episode 5 (a diverged actor, as SGD's at lr 0.1): its
    actions are not finite, so the batched environment step would refuse the whole pack; run 1 is
    marked diverged, the other three finish with the trajectories they have alone."""
    cfgs = configs("simultaneous", episodes=8)
    real = PackTrainer.episode

    def poisoned(self, ep):
        if ep == 5:
            k = self.pack.actors.nets_per_run
            i = [m.cfg.name for m in self.members].index("r1")
            with torch.no_grad():
                self.pack.actors.fc3.weight[i * k : (i + 1) * k] = float("nan")
        return real(self, ep)

    monkeypatch.setattr(PackTrainer, "episode", poisoned)
    summaries = PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()
    assert [s.state for s in summaries] == ["done", "diverged", "done", "done"]
    st = json.loads((tmp_path / "pack" / "r1" / "status.json").read_text())
    assert "actions not finite" in st["error"] and st["episodes_done"] == 5
    for c in cfgs[2:]:
        Trainer(c, tmp_path / "alone" / c.name, progress=False, quiet=True).run()
        a = pd.read_parquet(tmp_path / "alone" / c.name / "metrics.parquet")
        p = pd.read_parquet(tmp_path / "pack" / c.name / "metrics.parquet")
        assert len(p) == 8 and rel(a["eval_return"].iloc[1:], p["eval_return"].iloc[1:]) < 1e-6


def test_the_monitor_of_a_run_in_a_pack_writes_what_it_writes_alone(tmp_path):
    """Monitor on: each run's monitor/ parts and its metrics' monitor columns equal the run alone
    (actor rows to 1e-5 relative; the critic's rows too, except its hidden-layer dormant fractions,
    which a pack takes over padded rows)."""
    from ccm_madrl.monitor.integration import read_agents

    cfgs = [
        build_config({**c.model_dump(mode="json"), "monitor": {"enabled": True}}) for c in configs(episodes=8)
    ]
    PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()
    for c in cfgs[:2]:
        Trainer(c, tmp_path / "alone" / c.name, progress=False, quiet=True).run()
        a = read_agents(tmp_path / "alone" / c.name / "monitor")
        p = read_agents(tmp_path / "pack" / c.name / "monitor")
        assert len(a) == len(p) > 0
        assert list(a.columns) == list(p.columns)
        assert (tmp_path / "pack" / c.name / "monitor" / "summary.json").exists()
        for col in a.columns:
            if not pd.api.types.is_numeric_dtype(a[col]):  # role, names (object or pandas 3's str)
                continue
            if col.startswith("dormant."):  # the critic's: over its padded rows in a pack
                x, y = a[col][a["role"] == "actors"], p[col][p["role"] == "actors"]
                np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-5)
                continue
            x, y = a[col].to_numpy(dtype=float), p[col].to_numpy(dtype=float)
            ok = ~np.isnan(x)
            assert np.array_equal(ok, ~np.isnan(y)), col
            if ok.any():
                assert np.allclose(x[ok], y[ok], rtol=1e-5, atol=1e-6), col
        ma = pd.read_parquet(tmp_path / "alone" / c.name / "metrics.parquet")
        mp = pd.read_parquet(tmp_path / "pack" / c.name / "metrics.parquet")
        assert list(ma.columns) == list(mp.columns)
        np.testing.assert_allclose(ma["actor_grad_norm"], mp["actor_grad_norm"], rtol=1e-5)


def test_a_sweep_with_pack_writes_one_run_directory_per_run(tmp_path):
    """``ccm-madrl sweep FILE --pack 3``: 4 compatible runs (2 learning rates x 2 seeds) become packs
    of 3 and 1; the manifest and run directories are those of an unpacked sweep, and the runs'
    returns equal those of the runs trained alone; a bad --pack is one line and exit 2."""
    from ccm_madrl.cli import main
    from ccm_madrl.store import find_runs, load

    base = json.loads(json.dumps(SMALL))
    base["training"]["episodes"] = 6
    spec = {"name": "pk", "base": base, "axes": {"agent.actor_lr": [1e-3, 1e-2]}, "seeds": 2}
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(spec))
    assert (
        main(
            [
                "sweep",
                str(f),
                "--out",
                str(tmp_path / "packed"),
                "--pack",
                "3",
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    man = json.loads((tmp_path / "packed" / "manifest.json").read_text())
    assert [r["status"] for r in man["runs"]] == ["done"] * 4
    provs = [
        json.loads((tmp_path / "packed" / r["run_dir"] / "provenance.json").read_text()) for r in man["runs"]
    ]
    assert sorted(p.get("pack", {}).get("size", 1) for p in provs) == [1, 3, 3, 3]
    for r in man["runs"]:
        cfg = build_config(yaml.safe_load((tmp_path / "packed" / r["run_dir"] / "config.yaml").read_text()))
        Trainer(cfg, tmp_path / "plain" / r["id"], progress=False, quiet=True).run()
        a = pd.read_parquet(tmp_path / "plain" / r["id"] / "metrics.parquet")
        p = pd.read_parquet(tmp_path / "packed" / r["run_dir"] / "metrics.parquet")
        assert rel(a["eval_return"].iloc[1:], p["eval_return"].iloc[1:]) < 1e-6
    assert len(find_runs([tmp_path / "packed"])) == 4
    assert sorted(load(tmp_path / "packed").runs["prov.pack_size"]) == [1, 3, 3, 3]  # the store says so
    assert main(["sweep", str(f), "--out", str(tmp_path / "packed"), "--pack", "-1"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("update", ["simultaneous", "sequential"])
def test_a_pack_at_the_published_size_gives_each_run_its_trajectory_alone(tmp_path, update):
    """N = 50, batch 64, 10 steps, 50 evaluation episodes (the published setting), 4 runs with
    different seeds and learning rates, 20 episodes: the limits are exceeded in the same evaluation
    steps, returns equal alone to 1e-3 (measured at most: 3.8e-5 simultaneous, 1.1e-4 sequential —
    at N = 50 the master's Q ranking has near-ties that ~1e-7 differences of the batched critic can
    flip, so the 1e-6 of the small pack does not hold here)."""
    cfgs = []
    for seed, (a, c) in enumerate(LRS):
        d = {
            "seed": seed,
            "name": f"r{seed}",
            "agent": {"actor_update": update, "actor_lr": a, "critic_lr": c},
            "training": {"episodes": 20, "tensorboard": False, "checkpoint_every": 10},
            "monitor": {"enabled": False},
        }
        cfgs.append(build_config(d))
    PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()
    for c in cfgs:
        Trainer(c, tmp_path / "alone" / c.name, progress=False, quiet=True).run()
        a = pd.read_parquet(tmp_path / "alone" / c.name / "metrics.parquet")
        p = pd.read_parquet(tmp_path / "pack" / c.name / "metrics.parquet")
        np.testing.assert_array_equal(
            a["eval_constraint_frac"].fillna(-1), p["eval_constraint_frac"].fillna(-1)
        )
        assert rel(a["eval_return"].iloc[1:], p["eval_return"].iloc[1:]) < 1e-3
        assert rel(a["train_return"], p["train_return"]) < 1e-3


def test_pack_jobs_group_compatible_runs_and_leave_the_others_single():
    """Runs that differ only in seed / per-run scalars share packs of at most R; a run with another
    gamma gets its own group, a baseline stays a single job; the default R is within 1..16 on a CPU."""
    from ccm_madrl.experiment.pack import CPU_MAX_PACK, default_pack_size
    from ccm_madrl.sweep.jobs import PackJob, RunJob
    from ccm_madrl.sweep.packing import pack_jobs

    cfgs = configs() + configs(update="sequential")[:1]
    base = build_config(
        {**json.loads(json.dumps(SMALL)), "agent": {**SMALL["agent"], "algorithm": "all_local"}}
    )
    jobs = [RunJob(c.id(), c.model_dump(mode="json"), f"runs/{c.id()}") for c in [*cfgs, base]]
    out = pack_jobs(jobs, 3)
    packs = [j for j in out if isinstance(j, PackJob)]
    assert [len(p.members) for p in packs] == [3] and packs[0].id == f"pack:{cfgs[0].id()}+2"
    singles = [j for j in out if isinstance(j, RunJob)]
    assert {j.id for j in singles} == {cfgs[3].id(), cfgs[4].id(), base.id()}
    assert list(packs[0].run_dirs) == [f"runs/{c.id()}" for c in cfgs[:3]]
    assert 1 <= default_pack_size(cfgs[0]) <= CPU_MAX_PACK


def test_pack_jobs_put_runs_of_one_start_episode_together_the_furthest_first(tmp_path):
    """Runs resuming from different episodes train one after another inside a pack, so packs are
    formed per start episode (from status.json), the runs closest to their end first."""
    from ccm_madrl.sweep.jobs import RunJob
    from ccm_madrl.sweep.packing import pack_jobs

    cfgs = configs() + [build_config({**c.model_dump(mode="json"), "seed": c.seed + 10}) for c in configs()]
    starts = [0, 40, 0, 40, 0, 0, 0, 0]
    jobs = []
    for c, start in zip(cfgs, starts):
        d = tmp_path / c.id()
        d.mkdir()
        if start:
            (d / "status.json").write_text(json.dumps({"state": "interrupted", "episodes_done": start}))
        jobs.append(RunJob(c.id(), c.model_dump(mode="json"), str(d)))
    groups = [[m.id for m in j.members] for j in pack_jobs(jobs, 4)]
    assert groups == [[cfgs[1].id(), cfgs[3].id()], [c.id() for i, c in enumerate(cfgs) if starts[i] == 0][:4],
                      [c.id() for i, c in enumerate(cfgs) if starts[i] == 0][4:]]  # fmt: skip


@pytest.mark.parametrize("output", ["linear", "tanh_scaled"])
def test_rows_q_scores_each_runs_rows_with_its_own_critic(output):
    """The packed critic's row scoring without gradients on the CPU (one run at a time over the
    rows grouped by run) equals each run's own critic on its rows to 1e-6, with a run that has no
    rows; rows not grouped by run, and a pass with gradients, take the padded batch, with the same
    values."""
    from ccm_madrl.agents.networks import MasterCritic, PackedCritic

    torch.manual_seed(0)
    r, n, per = 3, 5, 4
    singles = [MasterCritic(n, hidden=(32, 16), output=output, output_scale=3.0) for _ in range(r)]
    packed = PackedCritic(r, singles[0])
    with torch.no_grad():
        for name, p in packed.named_parameters():
            p.copy_(torch.stack([dict(c.named_parameters())[name] for c in singles]))
    states, actions = torch.rand(r * per, n, 7), torch.rand(r * per, n, 3)
    cand = torch.rand(r * per, n) < 0.5
    cand[per : 2 * per] = False  # run 1 scores no row
    bi, ji = cand.nonzero(as_tuple=True)
    with torch.no_grad():
        joint = packed.joint(states, actions)
        got = packed.rows_q(joint, bi, states[bi, ji], actions[bi, ji], bi)
        want = torch.cat(
            [
                c.rows_q(c.joint(states[k * per : (k + 1) * per], actions[k * per : (k + 1) * per]),
                         bi[bi // per == k] - k * per, states[bi, ji][bi // per == k], actions[bi, ji][bi // per == k])
                for k, c in enumerate(singles)
            ]
        )  # fmt: skip
        assert got.shape == (int(cand.sum()),) and rel(want, got) < 1e-6
        flip = torch.arange(bi.numel() - 1, -1, -1)  # rows not grouped by run: the padded batch
        assert (
            rel(
                got.flip(0),
                packed.rows_q(joint, bi[flip], states[bi, ji][flip], actions[bi, ji][flip], bi[flip]),
            )
            < 1e-6
        )
    j = joint.clone().requires_grad_(True)  # with gradients: the padded batch, the same values
    assert rel(got, packed.rows_q(j, bi, states[bi, ji], actions[bi, ji], bi).detach()) < 1e-6


@pytest.mark.parametrize(
    "packed,agent",
    [
        (False, {}),
        (True, {}),
        (True, {"algorithm": "maddpg"}),
        (False, {"architecture": {"activation": "linear_clip"}}),
        (True, {"mitigations": {"actor_layernorm": True, "actor_reg": "preact", "actor_reg_coef": 1e-3}}),
    ],
)
def test_a_sequential_actor_step_computes_the_stepping_actors_gradients_bit_for_bit(
    monkeypatch, packed, agent
):
    """``BatchedActor.gradients_for`` skips the matrix products of the actors that do not step: the
    stepping actors' gradients (what the optimiser applies, the monitor reads and the clip scales)
    equal plain autograd's bit for bit, over a whole training step (N actor steps, each on a loss
    recomputed after the previous step), and the other actors' weight gradients are zero."""
    from ccm_madrl.agents import networks

    cfgs = configs("sequential", **agent)[: 2 if packed else 1]
    seen = {}
    plain = networks.BatchedActor.gradients_for
    for mode in ("restricted", "autograd"):
        if mode == "autograd":  # the same training step with every actor's gradient computed
            monkeypatch.setattr(networks.BatchedActor, "gradients_for", lambda self, nets: plain(self, None))
        ls = _learners(cfgs)
        learner = make_pack(ls) if packed else ls[0]
        steps = seen[mode] = []
        learner.actor_opt.register_step_pre_hook(
            lambda o, g, ag, s=steps: s.append((ag, [x.clone() for x in g]))
        )
        rs = np.random.default_rng(0)
        layout = ls[0].transition_layout()
        lead = (len(cfgs), 4) if packed else (4,)
        for _ in range(3):
            tr = {k: rs.normal(size=(*lead, *shape)) for k, shape in layout.items()}
            tr["selected"] = (rs.random((*lead, 12)) < 0.3).astype(float)
            tr["done"][:] = 0.0
            learner.observe(tr)
        learner.train()
    assert len(seen["restricted"]) == len(seen["autograd"]) == 12  # one step per actor
    n_nets = seen["restricted"][0][1][0].shape[0]
    for (ag, gr), (ag2, ga) in zip(seen["restricted"], seen["autograd"]):
        rows = torch.as_tensor(ag).reshape(-1)
        assert torch.equal(rows, torch.as_tensor(ag2).reshape(-1))
        others = torch.ones(n_nets, dtype=torch.bool)
        others[rows] = False
        for x, y in zip(gr, ga):
            assert torch.equal(x[rows], y[rows])
            assert y[rows].abs().sum() > 0 or x.dim() == 2  # a real gradient (a bias may be 0)
        for name, x in zip([n for n, _ in learner.actors.named_parameters()], gr):
            if name.startswith("fc") and name.endswith("weight"):
                assert not x[others].any(), name


@pytest.mark.parametrize("frac", [1.0, 0.5, 0.05])
def test_the_joint_part_of_picked_samples_run_by_run_is_the_padded_batchs(frac):
    """Acting's joint part of some samples (no gradient, CPU, grouped by run) goes one run at a time
    when every run with samples has at least ``MIN_ROWS`` of them, bit for bit the padded batch's
    values (and the padded batch otherwise: few samples per run); a run without samples is left out."""
    from ccm_madrl.agents.networks import MasterCritic, PackedCritic

    torch.manual_seed(0)
    r, n, per = 4, 6, 50
    packed = PackedCritic(r, MasterCritic(n, hidden=(64, 16)))
    with torch.no_grad():
        for p in packed.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    packed.per = per
    states, actions = torch.rand(r * per, n, 7), torch.rand(r * per, n, 3) * 2 - 1
    pick = torch.rand(r * per) < frac
    pick[per : 2 * per] = False  # run 1: no sample
    env = pick.nonzero(as_tuple=True)[0]
    x = torch.cat([packed._scale(states[env]).reshape(len(env), -1), actions[env].reshape(len(env), -1)], -1)
    with torch.no_grad():
        got = packed.joint(states[env], actions[env], env)
        padded = packed._linear(x, packed.fc1.weight[:, :, : packed.joint_dim], packed.fc1.bias, env)
        assert (packed._counts_by_run(env) is not None) == (frac >= 0.5)
    assert packed._counts_by_run(env) is None  # with gradients: the padded batch
    assert torch.equal(got, padded)
    own = [packed._runs_of(env) == k for k in range(r)]
    w, b = packed.fc1.weight[:, :, : packed.joint_dim], packed.fc1.bias
    for k in (0, 2, 3):  # each run's rows with its own slice
        torch.testing.assert_close(got[own[k]], x[own[k]] @ w[k].t() + b[k], rtol=1e-5, atol=1e-5)


def test_acting_forward_with_the_relus_in_place_is_the_forward():
    """The actors' gradient-free forward without hooks (ReLUs in place) gives the values of the
    module forward with a forward hook attached (the out-of-place path), bit for bit."""
    from ccm_madrl.agents.networks import PackedActor

    torch.manual_seed(0)
    actors = PackedActor(3, 5)
    s = torch.rand(3 * 8, 5, 7)
    with torch.no_grad():
        fast = actors(s)
        seen = []
        h = actors.act1.register_forward_hook(lambda m, i, o: seen.append(o))
        slow = actors(s)
        h.remove()
    assert seen and actors._unhooked()
    assert torch.equal(fast, slow)
