"""The batched learner against a naive per-sample, per-row implementation of the same losses
(the published formulation: full concatenated critic input, Python max over rows)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ccm_madrl.agents import AgentConfig, CCMLearner
from ccm_madrl.mec import MECConfig, RunRNG

N, B = 4, 6


def q_full(critic, S, U, s, u):
    """Q via the published path: fc1 on the concatenation [S, U, s, u]."""
    x = torch.cat([S.reshape(-1), U.reshape(-1), s, u])
    h = torch.relu(critic.fc1(x))
    h = torch.relu(critic.fc2(h))
    return critic.fc3(h).squeeze()


def actor_out(actors, i, s):
    a = actors
    i = 0 if a.shared else i
    h = torch.relu(s @ a.fc1.weight[i].T + a.fc1.bias[i])
    h = torch.relu(h @ a.fc2.weight[i].T + a.fc2.bias[i])
    return torch.tanh(h @ a.fc3.weight[i].T + a.fc3.bias[i])


def naive_target(learner, batch):
    ys = []
    for b in range(B):
        S2 = batch["next_states"][b]
        U2 = torch.stack([actor_out(learner.actors_target, j, S2[j]) for j in range(N)])
        qs = [q_full(learner.critic_target, S2, U2, S2[j], U2[j]) for j in range(N) if U2[j, 0] >= 0]
        q = max(qs) if qs else q_full(learner.critic_target, S2, U2, torch.zeros(7), torch.zeros(3))
        ys.append(batch["reward"][b] + 0.99 * q * (1 - batch["done"][b]))
    return torch.stack(ys).detach()


def naive_critic_loss(learner, batch, w, y):
    cur, tar = [], []
    for b in range(B):
        S, U = batch["states"][b], batch["actions"][b]
        rows = [i for i in range(N) if batch["selected"][b, i] == 1]
        if rows:
            for i in rows:
                cur.append(q_full(learner.critic, S, U, S[i], U[i]) * w[b])
                tar.append(y[b] * w[b])
        else:
            cur.append(q_full(learner.critic, S, U, torch.zeros(7), torch.zeros(3)) * w[b])
            tar.append(y[b] * w[b])
    return torch.nn.functional.mse_loss(torch.stack(cur), torch.stack(tar))


def naive_actor_loss(learner, batch, w):
    out = []
    for b in range(B):
        S = batch["states"][b]
        U = torch.stack([actor_out(learner.actors, j, S[j]) for j in range(N)])
        qs = [q_full(learner.critic, S, U, S[j], U[j]) * w[b] for j in range(N) if U[j, 0] >= 0]
        out.append(max(qs) if qs else q_full(learner.critic, S, U, torch.zeros(7), torch.zeros(3)) * w[b])
    return -torch.stack(out).mean()


def make_batch(seed, none_selected=(0,)):
    g = torch.Generator().manual_seed(seed)
    st = lambda *s: (
        torch.rand(*s, generator=g) * torch.tensor([23, 9, 3, 49, 437, 0.8, 1.1])
        + torch.tensor([1, 5, 0.5, 1, 300, 0.1, 0.4])
    )  # noqa: E731
    sel = (torch.rand(B, N, generator=g) < 0.5).float()
    for b in none_selected:
        sel[b] = 0
    return {
        "states": st(B, N, 7),
        "actions": torch.rand(B, N, 3, generator=g) * 2 - 1,
        "selected": sel,
        "reward": -torch.rand(B, generator=g) * 100,
        "next_states": st(B, N, 7),
        "done": (torch.arange(B) % 3 == 2).float(),
    }


def learner_for(update, seed=0, bias=None):
    env = MECConfig(n_agents=N)
    lr = AgentConfig(actor_update=update, batch_size=B, critic_hidden=(32, 16), actor_lr=1e-2, critic_lr=1e-2)
    learner = CCMLearner(env, lr, RunRNG("reference", seed, 37))
    if bias is not None:
        with torch.no_grad():
            learner.actors.fc3.bias[:, 0] = bias
            learner.actors_target.fc3.bias[:, 0] = bias
    return learner


@pytest.mark.parametrize("bias", [None, -5.0, 5.0])  # mixed proposers / nobody proposes / everybody
def test_simultaneous_step_matches_naive_gradients(bias):
    learner = learner_for("simultaneous", bias=bias)
    naive = copy.deepcopy(learner)
    batch = make_batch(1)
    w_np = np.linspace(0.3, 1.0, B)
    w = torch.tensor(w_np, dtype=torch.float32)

    got = {}
    learner.critic_opt.register_step_pre_hook(
        lambda o, a, k: got.__setitem__("critic", [p.grad.clone() for p in learner.critic.parameters()])
    )
    learner.actor_opt.register_step_pre_hook(
        lambda o, g, agent: got.__setitem__("actor", [x.clone() for x in g])
    )
    stats = learner.train_step(batch, w_np)

    y = naive_target(naive, batch)
    loss = naive_critic_loss(naive, batch, w, y)
    cg = torch.autograd.grad(loss, list(naive.critic.parameters()))
    for a, b in zip(got["critic"], cg):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert stats["critic_loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    # priority errors: sum over selected rows of (Q - y)^2 with the critic before its step
    errs = []
    for b in range(B):
        S, U = batch["states"][b], batch["actions"][b]
        rows = [i for i in range(N) if batch["selected"][b, i] == 1]
        qs = [q_full(naive.critic, S, U, S[i], U[i]) for i in rows] or [
            q_full(naive.critic, S, U, torch.zeros(7), torch.zeros(3))
        ]
        errs.append(sum(float((q.detach() - y[b]) ** 2) for q in qs))
    np.testing.assert_allclose(stats["errors"], errs, rtol=1e-4)

    # actor gradients with the updated critic
    naive.critic.load_state_dict(learner.critic.state_dict())
    aloss = naive_actor_loss(naive, batch, w)
    ag = torch.autograd.grad(aloss, list(naive.actors.parameters()))
    for a, b in zip(got["actor"], ag):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def step_beside_naive_critic(learner, batch, w_np):
    """Take the learner's training step on ``batch``; return a copy of the learner from before the
    step whose critic took the naive critic step (lr 1e-2), and the weights as a tensor."""
    naive = copy.deepcopy(learner)
    w = torch.tensor(w_np, dtype=torch.float32)
    learner.train_step(batch, w_np)
    y = naive_target(naive, batch)
    copt = torch.optim.Adam(naive.critic.parameters(), lr=1e-2)
    copt.zero_grad()
    naive_critic_loss(naive, batch, w, y).backward()
    copt.step()
    return naive, w


def test_sequential_step_matches_naive_per_actor_adam():
    learner = learner_for("sequential")
    batch = make_batch(2)
    naive, w = step_beside_naive_critic(learner, batch, np.linspace(0.5, 1.0, B))
    # independent per-actor Adam on per-actor copies of the parameters
    params_before = [p.detach().clone() for p in naive.actors.parameters()]
    params = [
        [torch.nn.Parameter(p[i].detach().clone()) for p in naive.actors.parameters()] for i in range(N)
    ]
    opts = [torch.optim.Adam(ps, lr=1e-2) for ps in params]
    used = [torch.zeros_like(p) for p in naive.actors.parameters()]  # the gradient each actor stepped with
    for i in range(N):
        with torch.no_grad():
            for p, q in zip(naive.actors.parameters(), params[i]):
                p[i] = q
        grads = torch.autograd.grad(naive_actor_loss(naive, batch, w), list(naive.actors.parameters()))
        for q, g, u in zip(params[i], grads, used):
            q.grad = g[i].clone()
            u[i] = g[i]
        opts[i].step()
        with torch.no_grad():
            for p, q in zip(naive.actors.parameters(), params[i]):
                p[i] = q
    # Adam's first step is lr * g / (|g| + eps): where |g| is within an order of eps (1e-8) its derivative in
    # g is up to lr / eps = 1e6, so float32 summation-order noise in g decides the step. Those elements are
    # held to Adam's bound (|step| <= lr); every other element (zero or |g| > 1e-7) must match to 2e-6.
    n_checked = n_excluded = 0
    for a, b, g, w0 in zip(learner.actors.parameters(), naive.actors.parameters(), used, params_before):
        conditioned = (g == 0) | (g.abs() > 1e-7)
        n_checked += int((g.abs() > 1e-7).sum())
        n_excluded += int((~conditioned).sum())
        torch.testing.assert_close(a[conditioned], b[conditioned], rtol=0, atol=2e-6)
        assert ((a - w0).abs() <= 1e-2 * (1 + 1e-5)).all() and ((b - w0).abs() <= 1e-2 * (1 + 1e-5)).all()
    assert n_checked > 3000 and n_excluded < 300, (n_checked, n_excluded)
    for a, b in zip(learner.critic.parameters(), naive.critic.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
    # targets are hard copies after the step
    for a, b in zip(learner.actors.parameters(), learner.actors_target.parameters()):
        assert torch.equal(a, b)


def test_acting_greedy_and_exploring():
    learner = learner_for("simultaneous")
    states = make_batch(3)["states"][:2].double().numpy()
    act = learner.act(states, explore=False)
    assert act.actor.shape == (2, N, 3) and act.hybrid.shape == (2, N, 3)
    assert set(np.unique(act.hybrid[..., 0])) <= {0.0, 1.0}
    assert ((act.hybrid[..., 1:] >= 0.01) & (act.hybrid[..., 1:] <= 1)).all()
    ex = learner.act(states, explore=True, epsilon=1.0)
    assert (np.abs(ex.actor) <= 1).all() and not np.allclose(ex.actor, act.actor)


def test_epsilon_schedule():
    learner = learner_for("simultaneous")
    assert learner.epsilon(0, 2000) == pytest.approx(1.0)
    assert learner.epsilon(2000, 2000) == pytest.approx(0.01 + 0.99 * np.exp(-1))


def test_a_diverged_critic_stops_training_with_a_clear_error():
    learner = learner_for("simultaneous")
    batch = make_batch(0)
    batch["reward"] = batch["reward"] * float("inf")  # TD targets overflow, as when SGD diverges
    before = [p.detach().clone() for p in learner.critic.parameters()]
    with pytest.raises(FloatingPointError, match=r"critic loss is (nan|inf): training diverged"):
        learner.train_step(batch, np.ones(B))
    # refused before any weight moved
    assert all(torch.equal(a, p) for a, p in zip(before, learner.critic.parameters()))


def test_published_repository_variant_shared_actor_selected_objective():
    """actor_sharing: shared + actor_objective: selected + sequential reproduce the published
    repository's loop: ONE actor network for all agents, N Adam steps of it (one optimiser state) per
    training step, each on a fresh loss -mean_b w_b max over the stored selection of Q."""
    env = MECConfig(n_agents=N)
    cfg = AgentConfig(
        batch_size=B, critic_hidden=(32, 16), actor_lr=1e-2, critic_lr=1e-2,
        actor_sharing="shared", actor_objective="selected",
    )  # fmt: skip
    learner = CCMLearner(env, cfg, RunRNG("reference", 0, 37))
    assert learner.actors.fc1.weight.shape[0] == 1
    # one network: the same state gives the same action whichever agent holds it
    s = torch.rand(3, N, 7) * 100
    s[:, 1] = s[:, 0]
    u = learner.actors(s)
    torch.testing.assert_close(u[:, 0], u[:, 1])

    naive = copy.deepcopy(learner)
    batch = make_batch(3, none_selected=(0, 4))
    w_np = np.linspace(0.4, 1.0, B)
    w = torch.tensor(w_np, dtype=torch.float32)
    learner.train_step(batch, w_np)

    y = naive_target(naive, batch)  # (the target is the same for both variants)
    copt = torch.optim.Adam(naive.critic.parameters(), lr=1e-2)
    copt.zero_grad()
    naive_critic_loss(naive, batch, w, y).backward()
    copt.step()
    net = [torch.nn.Parameter(p[0].detach().clone()) for p in naive.actors.parameters()]
    opt = torch.optim.Adam(net, lr=1e-2)

    def shared_out(x):
        h = torch.relu(x @ net[0].T + net[1])
        h = torch.relu(h @ net[2].T + net[3])
        return torch.tanh(h @ net[4].T + net[5])

    for _ in range(N):
        out = []
        for b in range(B):
            S = batch["states"][b]
            U = shared_out(S)
            rows = [j for j in range(N) if batch["selected"][b, j] == 1]
            qs = [q_full(naive.critic, S, U, S[j], U[j]) * w[b] for j in rows]
            out.append(max(qs) if qs else q_full(naive.critic, S, U, torch.zeros(7), torch.zeros(3)) * w[b])
        opt.zero_grad()
        (-torch.stack(out).mean()).backward()
        opt.step()
    for a, b in zip(learner.actors.parameters(), net):
        torch.testing.assert_close(a[0], b, rtol=0, atol=2e-6)
    for a, b in zip(learner.actors.parameters(), learner.actors_target.parameters()):
        assert torch.equal(a, b)
    assert int(learner.actor_opt.steps[0]) == N


def test_shared_actor_initialises_one_network_from_the_torch_stream():
    """Published repository order under a torch seed: one actor network, then the critic."""
    env = MECConfig(n_agents=N)
    learner = CCMLearner(env, AgentConfig(actor_sharing="shared"), RunRNG("reference", 7, 37))
    torch.manual_seed(7)
    l1, l2, l3 = torch.nn.Linear(7, 64), torch.nn.Linear(64, 32), torch.nn.Linear(32, 3)
    l3.weight.data.uniform_(-3e-3, 3e-3)
    l3.bias.data.uniform_(-3e-3, 3e-3)
    c1 = torch.nn.Linear(N * 10 + 10, 512)
    for dst, src in ((learner.actors.fc1, l1), (learner.actors.fc2, l2), (learner.actors.fc3, l3)):
        assert torch.equal(dst.weight[0], src.weight) and torch.equal(dst.bias[0], src.bias)
    assert torch.equal(learner.critic.fc1.weight, c1.weight)


def test_selected_objective_is_refused_for_the_benchmarks():
    with pytest.raises(ValueError, match="actor_objective: 'selected' applies to ccm_madrl only"):
        AgentConfig(algorithm="maddpg", actor_objective="selected")
