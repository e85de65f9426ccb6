"""Each mitigation option changes exactly what it claims."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ccm_madrl.agents import AgentConfig, CCMLearner
from ccm_madrl.agents.ccm import RunningMeanStd, clip_per_agent_
from ccm_madrl.agents.networks import BatchedActor, make_activation
from ccm_madrl.experiment import ConfigError, Trainer, build_config
from ccm_madrl.mec import MECConfig, RunRNG
from ccm_madrl.monitor import GradientFlowMonitor

N, B = 4, 6


def learner(**kw):
    cfg = AgentConfig(batch_size=B, critic_hidden=(32, 16), actor_update="simultaneous", **kw)
    return CCMLearner(MECConfig(n_agents=N), cfg, RunRNG("reference", 0, 37))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "states": torch.rand(B, N, 7, generator=g) * 5,
        "actions": torch.rand(B, N, 3, generator=g) * 2 - 1,
        "selected": (torch.rand(B, N, generator=g) < 0.5).float(),
        "reward": -torch.rand(B, generator=g) * 50,
        "next_states": torch.rand(B, N, 7, generator=g) * 5,
        "done": torch.zeros(B),
    }


def capture_actor_grads(lrn):
    got = {}
    lrn.actor_opt.register_step_pre_hook(lambda o, g, a: got.__setitem__("g", [x.clone() for x in g]))
    return got


# ---------------------------------------------------------------- output activations
@pytest.mark.parametrize(
    "name, f, df",
    [
        ("tanh", np.tanh, lambda x: 1 - np.tanh(x) ** 2),
        ("softsign", lambda x: x / (1 + abs(x)), lambda x: 1 / (1 + abs(x)) ** 2),
        ("hardtanh", lambda x: np.clip(x, -1, 1), lambda x: float(abs(x) < 1)),
        ("linear_clip", lambda x: np.clip(x, -1, 1), lambda x: 1.0),  # straight-through: never saturated
        (
            "scaled_sigmoid",
            lambda x: 2 / (1 + np.exp(-x)) - 1,
            lambda x: 2 * np.exp(-x) / (1 + np.exp(-x)) ** 2,
        ),
    ],
)
@pytest.mark.parametrize("x", [-3.0, -0.5, 0.0, 0.7, 2.5])
def test_activation_values_and_derivatives(name, f, df, x):
    act = make_activation(name)
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = act(t)
    (g,) = torch.autograd.grad(y, t)
    assert float(y.detach()) == pytest.approx(f(x), abs=1e-12)
    assert float(g) == pytest.approx(df(x), abs=1e-12)


@pytest.mark.parametrize(
    "name, z, exact, near",
    [
        ("tanh", 10.0, 1.0, 1.0),
        ("hardtanh", 1.5, 1.0, 1.0),
        ("softsign", 100.0, 0.0, 1.0),
        ("scaled_sigmoid", 20.0, 1.0, 1.0),
        ("softsign", 10.0, 0.0, 0.0),
        ("linear_clip", 10.0, 0.0, 0.0),  # the output is clipped to 1, its gradient is not
    ],
)
def test_monitor_saturation_generalises_to_each_activation(name, z, exact, near):
    actors = BatchedActor(2, state_dim=3, action_dim=2, hidden=(4, 4), activation=name)
    with torch.no_grad():
        actors.fc3.bias.fill_(z)
        actors.fc3.weight.zero_()
    mon = GradientFlowMonitor().attach("actors", actors, per_agent=True)
    mon.start_episode(0)
    u = actors(torch.randn(5, 2, 3))
    u.sum().backward()
    mon.record_step("actors")
    row = mon.end_episode(0)[0]
    assert row["frac_sat_exact"] == exact and row["frac_sat_near"] == near


# ---------------------------------------------------------------- reward normalisation
def test_running_stats_match_numpy_on_a_known_stream():
    rs = RunningMeanStd()
    stream = np.random.default_rng(0).normal(-40, 12, 1000)
    seen = []
    for chunk in np.array_split(stream, 37):
        rs.update(chunk)
        seen.extend(chunk)
        assert rs.mean == pytest.approx(np.mean(seen), rel=1e-12)
        assert rs.var == pytest.approx(np.var(seen), rel=1e-10)
    assert rs.count == 1000


def test_reward_normalisation_and_scaling_in_the_td_target():
    plain, scaled, normed = learner(), learner(reward_scale=0.1), learner(reward_norm="running")
    r = np.array([-10.0, -30.0, -20.0, -40.0])
    normed.reward_stats.update(r)
    rt = torch.tensor([-25.0, 5.0])
    torch.testing.assert_close(plain.reward_signal(rt), rt)
    torch.testing.assert_close(scaled.reward_signal(rt), 0.1 * rt)
    expected = (rt - r.mean()) / np.sqrt(r.var() + 1e-8)
    torch.testing.assert_close(normed.reward_signal(rt), expected.float())
    b = batch()
    # the target changes by exactly the reward transform
    y_plain = plain.td_target(b["reward"], b["next_states"], b["done"])
    y_scaled = scaled.td_target(b["reward"], b["next_states"], b["done"])
    torch.testing.assert_close(y_plain - y_scaled, 0.9 * b["reward"])


def test_observe_updates_running_reward_stats():
    lrn = learner(reward_norm="running")
    t = 3
    rs = np.random.default_rng(0)
    tr = {
        "states": rs.random((t, N, 7)),
        "actions": rs.random((t, N, 3)),
        "selected": np.zeros((t, N)),
        "reward": np.array([-1.0, -2.0, -6.0]),
        "next_states": rs.random((t, N, 7)),
        "done": np.zeros(t),
    }
    lrn.observe(tr)
    assert lrn.reward_stats.count == 3 and lrn.reward_stats.mean == pytest.approx(-3.0)


# ---------------------------------------------------------------- layer-wise learning rate
def test_layerwise_lr_output_layer_adam_step_is_the_stated_fraction():
    base, lw = learner(actor_lr=1e-2), learner(actor_lr=1e-2, actor_output_lr_scale=0.1)
    lw.actors.load_state_dict(base.actors.state_dict())
    lw.critic.load_state_dict(base.critic.state_dict())
    lw.actors_target.load_state_dict(base.actors_target.state_dict())
    lw.critic_target.load_state_dict(base.critic_target.state_dict())
    before = {k: v.clone() for k, v in base.actors.state_dict().items()}
    b, w = batch(), np.ones(B)
    base.train_step(b, w)
    lw.train_step(b, w)
    for k, v0 in before.items():
        d_base = base.actors.state_dict()[k] - v0
        d_lw = lw.actors.state_dict()[k] - v0
        frac = 0.1 if k.startswith("fc3.") else 1.0
        torch.testing.assert_close(d_lw, frac * d_base, rtol=1e-4, atol=1e-9)


# ---------------------------------------------------------------- gradient clipping
def test_per_agent_clipping_bounds_every_agents_norm():
    g = [torch.randn(5, 3, 4) * 10, torch.randn(5, 3)]
    g[0][2] *= 1e-3
    g[1][2] *= 1e-3
    small = [x[2].clone() for x in g]
    pre = clip_per_agent_(g, 1.0)
    post = torch.sqrt(sum(x.pow(2).reshape(5, -1).sum(1) for x in g))
    assert (post <= 1.0 + 1e-5).all() and (pre > 1).sum() >= 4
    for x, s in zip(g, small):  # an agent below the bound is untouched
        assert torch.equal(x[2], s)


def test_clipping_in_the_training_step():
    lrn = learner(actor_grad_clip=0.05, critic_grad_clip=1.0, actor_lr=1.0)
    got = capture_actor_grads(lrn)
    cg = {}
    lrn.critic_opt.register_step_pre_hook(
        lambda o, a, k: cg.__setitem__(
            "n", torch.nn.utils.get_total_norm([p.grad for p in lrn.critic.parameters()])
        )
    )
    stats = lrn.train_step(batch(), np.ones(B))
    norms = torch.sqrt(sum(x.pow(2).reshape(N, -1).sum(1) for x in got["g"]))
    assert (norms <= 0.05 + 1e-6).all()
    assert float(cg["n"]) <= 1.0 + 1e-5 and stats["critic_grad_norm_preclip"] > 1.0


# ---------------------------------------------------------------- anti-saturation terms
def test_preactivation_penalty_adds_exactly_its_gradient():
    import copy

    base, reg = learner(), learner(actor_reg="preact", actor_reg_coef=0.1)
    for name in ("actors", "critic", "actors_target", "critic_target"):
        getattr(reg, name).load_state_dict(getattr(base, name).state_dict())
    actors0 = copy.deepcopy(base.actors)  # the actors before the step
    gb, gr = capture_actor_grads(base), capture_actor_grads(reg)
    b = batch()
    base.train_step(b, np.ones(B))
    reg.train_step(b, np.ones(B))
    _, z = actors0.forward_with_preactivation(b["states"])
    pen = torch.autograd.grad(0.1 * (z**2).mean(dim=(0, 2)).sum(), list(actors0.parameters()))
    for g_reg, g_base, g_pen in zip(gr["g"], gb["g"], pen):
        torch.testing.assert_close(g_reg - g_base, g_pen, rtol=1e-4, atol=1e-7)


def test_preactivation_penalty_gradient_value():
    lrn = learner(actor_reg="preact", actor_reg_coef=0.5)
    actors = lrn.actors
    s = batch()["states"]
    u, z = actors.forward_with_preactivation(s)
    pen = 0.5 * (z**2).mean(dim=(0, 2)).sum()
    g_pen = torch.autograd.grad(pen, [actors.fc3.bias])[0]
    # d/db of 0.5 * mean_{b,k} z^2 = 0.5 * 2 * mean_b z / K  (K = 3 outputs), per agent
    torch.testing.assert_close(g_pen, (z.mean(0) / 3).detach(), rtol=1e-5, atol=1e-7)


def _assert_squashed_gaussian_sample(a, logp, mean, log_std, eps):
    """a = tanh(z), z = mean + std * eps, and logp the change-of-variables log-density of a."""
    z = mean + log_std.exp() * eps
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(z).sum(-1) - torch.log(
        1 - torch.tanh(z) ** 2
    ).sum(-1)
    torch.testing.assert_close(a, torch.tanh(z))
    torch.testing.assert_close(logp, ref, rtol=1e-4, atol=1e-4)


def test_squashed_gaussian_log_prob_is_exact():
    actors = BatchedActor(3, stochastic=True)
    s = torch.rand(4, 3, 7)
    g = torch.Generator().manual_seed(0)
    a, logp = actors.sample(s, g)
    out = actors._z(actors._agent_major(s)).transpose(0, 1)
    mean, log_std = out[..., :3], out[..., 3:].clamp(-5, 2)
    g2 = torch.Generator().manual_seed(0)
    eps = torch.randn(mean.transpose(0, 1).shape, generator=g2).transpose(0, 1)
    _assert_squashed_gaussian_sample(a, logp, mean, log_std, eps)
    assert actors(s).shape == (4, 3, 3)  # the deterministic action is tanh(mean)
    torch.testing.assert_close(actors(s), torch.tanh(mean))


def test_squashed_gaussian_log_prob_of_a_shared_actor():
    """One network for all agents: every (sample, agent) row is a draw of the same distribution
    family, computed here row by row with a plain forward pass."""
    actors = BatchedActor(3, stochastic=True, shared=True)
    s = torch.rand(4, 3, 7)
    a, logp = actors.sample(s, torch.Generator().manual_seed(0))
    w = [p[0] for p in (actors.fc1.weight, actors.fc1.bias, actors.fc2.weight, actors.fc2.bias)]
    h = torch.relu(torch.relu(s @ w[0].T + w[1]) @ w[2].T + w[3])
    out = h @ actors.fc3.weight[0].T + actors.fc3.bias[0]  # (4, 3, 6)
    mean, log_std = out[..., :3], out[..., 3:].clamp(-5, 2)
    eps = torch.randn((1, 12, 3), generator=torch.Generator().manual_seed(0)).reshape(4, 3, 3)
    _assert_squashed_gaussian_sample(a, logp, mean, log_std, eps)
    torch.testing.assert_close(actors(s), torch.tanh(mean))


def test_entropy_term_trains_and_checkpoints():
    lrn = learner(actor_reg="entropy", actor_reg_coef=0.01)
    stats = lrn.train_step(batch(), np.ones(B))
    assert np.isfinite(stats["actor_loss"])
    sd = lrn.state_dict()
    other = learner(actor_reg="entropy", actor_reg_coef=0.01)
    other.load_state_dict(sd)
    assert torch.equal(other.torch_gen.get_state(), lrn.torch_gen.get_state())


# ---------------------------------------------------------------- architecture
def test_larger_actor_and_layernorm():
    lrn = learner(actor_hidden=(512, 128), actor_layernorm=True)
    assert lrn.actors.fc1.weight.shape == (N, 512, 7) and lrn.actors.fc2.weight.shape == (N, 128, 512)
    s = batch()["states"]
    u, z = lrn.actors.forward_with_preactivation(s)
    a = lrn.actors
    x = s.transpose(0, 1)
    raw = a.fc3(a.act2(a.fc2(a.act1(a.fc1(x)))))  # (N, B, 3)
    with torch.no_grad():  # LayerNorm over the 3 pre-activations, then the per-agent affine
        a.norm.weight.copy_(torch.rand(N, 3) + 0.5)
        a.norm.bias.copy_(torch.randn(N, 3))
    _, z = a.forward_with_preactivation(s)
    ref = torch.nn.functional.layer_norm(raw, (3,), eps=1e-5) * a.norm.weight.unsqueeze(
        1
    ) + a.norm.bias.unsqueeze(1)
    torch.testing.assert_close(z, ref.transpose(0, 1))
    names = [n for n, _ in lrn.actors.named_parameters()]
    assert "norm.weight" in names and lrn.actors.norm.weight.shape == (N, 3)


def test_mitigation_config_errors():
    with pytest.raises(ConfigError, match="actor_reg_coef: must be > 0"):
        build_config({"agent": {"actor_reg": "preact"}})
    with pytest.raises(ConfigError, match="needs activation 'tanh'"):
        build_config({"agent": {"actor_reg": "entropy", "actor_reg_coef": 0.1, "activation": "softsign"}})
    with pytest.raises(ConfigError, match="actor_grad_clip"):
        build_config({"agent": {"actor_grad_clip": 0}})


def test_input_normalisation_scales_states_and_keeps_the_fake_agent_zero():
    from ccm_madrl.mec.wrappers import observation_bounds

    lrn = learner(input_norm=True)
    plain = learner()
    lo, hi = observation_bounds(MECConfig(n_agents=N))
    s = batch()["states"]
    scaled = (s - torch.tensor(lo, dtype=torch.float32)) / torch.tensor(hi - lo, dtype=torch.float32)
    for a, b in zip(lrn.actors.parameters(), plain.actors.parameters()):
        assert torch.equal(a, b)  # same init: the option only changes the inputs
    torch.testing.assert_close(lrn.actors(s), plain.actors(scaled))
    u = torch.rand(B, N, 3)
    torch.testing.assert_close(lrn.critic.joint(s, u), plain.critic.joint(scaled, u))
    torch.testing.assert_close(lrn.critic.own(s[:, 0], u[:, 0]), plain.critic.own(scaled[:, 0], u[:, 0]))
    torch.testing.assert_close(lrn.critic(s, u), plain.critic(scaled, u))  # fake agent: joint only
    sd = lrn.critic.state_dict()
    assert "in_lo" in sd and "in_span" in sd


# ---------------------------------------------------------------- the causal controls (configs/controls)
def test_linear_clip_is_exactly_the_clipped_value_at_any_magnitude():
    """float32, |x| up to 1e30: the value is clamp(x, -1, 1) exactly (an action outside the bounds
    fails the environment's check), the gradient is 1."""
    x = torch.tensor([-1e30, -1e8, -3e7, -1e3, -1.5, -1.0, -0.3, 0.0, 0.7, 1.0, 1.0000001, 2.5, 1e3, 3e7, 1e8, 1e30],
                     requires_grad=True)  # fmt: skip
    y = make_activation("linear_clip")(x)
    assert torch.equal(y.detach(), x.detach().clamp(-1, 1))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, torch.ones_like(x))


def test_bounded_critic_output_is_scale_tanh_of_the_linear_one_everywhere_it_is_used():
    """critic_output tanh_scaled: every Q the learner computes (the master's scores, the TD target,
    the critic's rows, the actor loss's maximum) is S * tanh(q / S) of the linear critic's q."""
    from ccm_madrl.agents.argmax import full_q, own_inputs
    from ccm_madrl.agents.networks import MasterCritic

    torch.manual_seed(0)
    lin = MasterCritic(5, hidden=(16, 8))
    bounded = MasterCritic(5, hidden=(16, 8), output="tanh_scaled", output_scale=3.0)
    bounded.load_state_dict(lin.state_dict())
    with torch.no_grad():
        for c in (lin, bounded):
            c.fc3.bias.fill_(4.0)  # beyond the bound: the bounded output saturates toward 3
    s, a = torch.randn(6, 5, 7), torch.rand(6, 5, 3) * 2 - 1
    q_lin = lin(s, a, s[:, 1], a[:, 1])
    q_b = bounded(s, a, s[:, 1], a[:, 1])
    assert torch.allclose(q_b, 3.0 * torch.tanh(q_lin / 3.0), rtol=0, atol=1e-6)
    assert float(q_b.detach().abs().max()) < 3.0 < float(q_lin.detach().abs().max())
    cand = torch.ones(6, 5, dtype=torch.bool)
    with torch.no_grad():
        rows_b = full_q(bounded, bounded.joint(s, a), own_inputs(bounded, s, a), cand)
        rows_l = full_q(lin, lin.joint(s, a), own_inputs(lin, s, a), cand)
    assert torch.allclose(rows_b, 3.0 * torch.tanh(rows_l / 3.0), rtol=0, atol=1e-6)


def test_the_controls_train_and_describe_themselves(tmp_path):
    for key, value, role, text in (
        ("agent.architecture.activation", "linear_clip", "actors", "linear_clip"),
        ("agent.architecture.critic_output", "tanh_scaled", "critic", "tanh_scaled (scale 400)"),
    ):
        cfg = build_config(SMALL, [f"{key}={value}", "training.episodes=3"])
        Trainer(cfg, tmp_path / value, progress=False, quiet=True).run()
        described = json.loads((tmp_path / value / "learner.json").read_text())[role]
        assert described["output_activation"] == text
        m = pd.read_parquet(tmp_path / value / "metrics.parquet")
        assert len(m) == 3 and np.isfinite(m["critic_loss"].dropna()).all()
    with pytest.raises(ConfigError, match="argmax_row_skip"):
        build_config(SMALL, ["agent.architecture.critic_output=tanh_scaled", "agent.argmax_row_skip=true"])


SMALL = {
    "env": {"n_agents": 6, "max_steps": 3},
    "agent": {"batch_size": 8, "critic_hidden": [32, 16]},
    "training": {"episodes": 3, "eval_episodes": 2, "tensorboard": False},
    "monitor": {"enabled": True},
}
