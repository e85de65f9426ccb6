"""The sequential actor steps' shared work (``offpolicy.ActorSteps``): the critic's joint state part
computed once per training step, every actor's actions computed once and only the stepping actor's
column recomputed. The same loss as recomputing everything at every actor step, up to float32
summation order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ccm_madrl.agents import make_learner, offpolicy
from ccm_madrl.agents.networks import BatchedActor, MasterCritic, PackedActor, PackedCritic
from ccm_madrl.agents.pack import make_pack
from ccm_madrl.experiment import build_config
from ccm_madrl.mec.rng import RunRNG

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Measured on this project's 2-core x86 machine, float32, one thread, over the cases below: the
# stepping actors' gradients of the factorised step vs the full recomputation differ by at most
# ~4e-7 relative (norm-wise, per actor and tensor), over the 12 actor steps of a training step (the
# later steps start from weights the earlier steps' gaps moved); the loss values by at most ~7e-8.
# Held to 1e-5: 25x margin, still far below what a wrong column, a stale action or a missing
# gradient path gives (order 1).
GRAD_RTOL = 1e-5
LOSS_RTOL = 1e-5



def observe_random(learner, n_runs: int) -> None:
    """Three rounds of random transitions (4 steps each; 12 clients) into the learner's replay."""
    rs = np.random.default_rng(0)
    layout = learner.transition_layout()
    lead = (n_runs, 4) if n_runs > 1 else (4,)
    for _ in range(3):
        tr = {k: rs.normal(size=(*lead, *shape)) for k, shape in layout.items()}
        tr["selected"] = (rs.random((*lead, 12)) < 0.3).astype(float)
        tr["done"][:] = 0.0
        learner.observe(tr)

def _cfgs(runs: int, **agent) -> list:
    out = []
    for seed in range(runs):
        d = {
            "env": {"n_agents": 12, "max_steps": 4},
            "agent": {"batch_size": 16, "critic_hidden": [64, 32], "actor_update": "sequential"},
            "training": {"episodes": 2, "eval_episodes": 1, "tensorboard": False},
            "monitor": {"enabled": False},
            "seed": seed,
            "name": f"r{seed}",
        }
        d["agent"].update(json.loads(json.dumps(agent)))
        d["agent"]["actor_lr"] = (1e-2, 1e-3)[seed % 2]  # large steps: the actions move between steps
        out.append(build_config(d))
    return out


def _learner(cfgs):
    ls = [make_learner(c, RunRNG(c.rng_mode, c.seed, c.env_seed), "cpu") for c in cfgs]
    return make_pack(ls) if len(ls) > 1 else ls[0]


def _one_training_step(cfgs, monkeypatch, factorised: bool):
    """One training step on a fixed random replay; the gradients of every actor step and the loss."""
    learner = _learner(cfgs)
    if not factorised:  # every actor step recomputes every actor and the whole joint product
        monkeypatch.setattr(offpolicy, "ActorSteps", lambda *a, **k: None)
    calls = []
    plain = BatchedActor.forward_agent
    monkeypatch.setattr(BatchedActor, "forward_agent", lambda self, *a: calls.append(1) or plain(self, *a))
    steps = []
    learner.actor_opt.register_step_pre_hook(lambda o, g, ag: steps.append((ag, [x.clone() for x in g])))
    observe_random(learner, len(cfgs))
    stats = learner.train()
    monkeypatch.undo()
    loss = [s["actor_loss"] for s in stats] if isinstance(stats, list) else [stats["actor_loss"]]
    return steps, np.array(loss), len(calls)


def _rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x - y).double().norm() / y.double().norm().clamp_min(1e-30))


@pytest.mark.parametrize(
    "runs,agent,column",
    [
        (1, {}, True),
        (2, {}, True),
        (1, {"algorithm": "maddpg"}, True),
        (2, {"architecture": {"activation": "linear_clip"}, "mitigations": {"input_norm": True}}, True),
        (1, {"mitigations": {"actor_layernorm": True}}, True),
        (1, {"actor_sharing": "shared"}, False),  # the state part only: every step moves every action
        (2, {"mitigations": {"actor_reg": "preact", "actor_reg_coef": 1e-3}}, False),
    ],
)
def test_factorised_actor_steps_equal_the_full_recomputation(monkeypatch, runs, agent, column):
    cfgs = _cfgs(runs, **agent)
    fact, loss_f, calls = _one_training_step(cfgs, monkeypatch, factorised=True)
    full, loss_o, calls_full = _one_training_step(cfgs, monkeypatch, factorised=False)
    assert calls_full == 0
    assert calls == (2 * 12 if column else 0)  # each actor step: live with gradient, refreshed after
    assert len(fact) == len(full) == 12
    worst = 0.0
    for (ag, gf), (ag2, go) in zip(fact, full):
        assert (ag is None) == (ag2 is None)
        rows = slice(None) if ag is None else torch.as_tensor(ag).reshape(-1)
        if ag is not None:
            assert torch.equal(rows, torch.as_tensor(ag2).reshape(-1))
        for x, y in zip(gf, go):
            assert y[rows].abs().sum() > 0 or x.dim() == 2  # a real gradient (a bias may be 0)
            worst = max(worst, _rel(x[rows], y[rows]))
            if ag is not None:
                others = torch.ones(x.shape[0], dtype=torch.bool)
                others[rows] = False
                assert not x[others].any() or x.dim() == 2
    print(f"largest relative gap of the stepping actors' gradients: {worst:.2e}")
    assert worst < GRAD_RTOL, worst
    np.testing.assert_allclose(loss_f, loss_o, rtol=LOSS_RTOL)


@pytest.mark.parametrize("runs", [1, 3])
@pytest.mark.parametrize("batch", [16, 33, 64])
@pytest.mark.parametrize("activation", ["tanh", "softsign", "hardtanh", "linear_clip", "scaled_sigmoid"])
def test_forward_agent_is_the_full_forwards_column(runs, batch, activation):
    """Bit for bit, except ``scaled_sigmoid``: torch's sigmoid rounds differently in its kernels'
    vector body and scalar tail, so an element's last bits depend on its place in the tensor
    (measured: up to ~2e-7 absolute on outputs in (-1, 1)); held to 1e-6 absolute."""
    torch.manual_seed(0)
    kw = {"activation": activation, "layernorm": runs == 3}
    actors = PackedActor(runs, 9, **kw) if runs > 1 else BatchedActor(9, **kw)
    actors.set_input_bounds(torch.zeros(7), torch.full((7,), 4.0))
    with torch.no_grad():
        for p in actors.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    states = torch.rand(runs * batch, 9, 7) * 4
    full = actors(states)
    for i in range(9):
        got = actors.forward_agent(states, i)
        if activation == "scaled_sigmoid":
            torch.testing.assert_close(got, full[:, i], rtol=0, atol=1e-6)
        else:
            assert torch.equal(got, full[:, i]), i


@pytest.mark.parametrize("runs", [1, 3])
def test_the_joint_part_in_two_products_is_the_joint_product(runs):
    """``joint_state + joint_actions`` is ``joint`` (another summation order), and an agent's
    columns are its slice of the action part."""
    torch.manual_seed(1)
    one = MasterCritic(10, hidden=(64, 32))
    critic = PackedCritic(runs, one) if runs > 1 else one
    with torch.no_grad():
        for p in critic.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    s, u = torch.rand(runs * 16, 10, 7), torch.rand(runs * 16, 10, 3) * 2 - 1
    j = critic.joint(s, u)
    torch.testing.assert_close(critic.joint_state(s) + critic.joint_actions(u), j, rtol=1e-5, atol=1e-5)
    mask = torch.zeros(10, 1)
    mask[4] = 1
    torch.testing.assert_close(
        critic.joint_actions(u[:, 4], 4), critic.joint_actions(u * mask), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("runs", [1, 3])
def test_the_live_columns_carry_autograds_gradient_bit_for_bit(runs):
    """``_LiveColumns``: the kept joint part's value, and for the stepping agent's actions the
    gradient autograd gives ``base + (part - part.detach())`` (the form it replaces), bit for bit;
    a wrong column or run gives another gradient."""
    critic = _random_critic(runs, n=10, hidden=(64, 32))
    base, g = torch.randn(runs * 16, 64), torch.randn(runs * 16, 64)
    for agent in (0, 4, 9):
        live = (torch.rand(runs * 16, 3) * 2 - 1).requires_grad_()
        part = critic.joint_actions(live, agent)
        old = base + (part - part.detach())
        (want,) = torch.autograd.grad(old, live, g)
        new = offpolicy._LiveColumns.apply(base, live, critic, agent)
        (got,) = torch.autograd.grad(new, live, g)
        assert torch.equal(new, old)
        assert torch.equal(got, want)
        other = critic.joint_actions_grad(g, (agent + 1) % 10)
        assert not torch.equal(other, want)


@pytest.mark.parametrize("runs,objective", [(1, "proposers"), (1, "selected"), (2, "proposers")])
def test_the_kept_own_parts_change_no_score(monkeypatch, runs, objective):
    """The actor loss's maximum with every row's own part computed once per training step (and the
    stepping agent's column after its update) scores the rows as recomputing them at every step:
    a run alone bit for bit (the own product is row-invariant at one thread), so every actor
    step's gradient is equal; a pack to float32 order (its rows were scored by one product per run
    of the candidate rows, ~1e-7)."""
    cfgs = _cfgs(runs, variant={"actor_objective": objective})
    kept, loss_k, _ = _one_training_step(cfgs, monkeypatch, factorised=True)
    used = []
    plain = offpolicy.ActorSteps.own_part
    monkeypatch.setattr(offpolicy.ActorSteps, "own_part", lambda self: used.append(plain(self)) and None)
    again, loss_a, _ = _one_training_step(cfgs, monkeypatch, factorised=True)
    assert len(used) > 0 and all(u is not None for u in used)  # the kept parts existed; not used
    for (_, gk), (_, ga) in zip(kept, again):
        for x, y in zip(gk, ga):
            if runs == 1:
                assert torch.equal(x, y)
            else:
                assert _rel(x, y) < GRAD_RTOL
    np.testing.assert_allclose(loss_k, loss_a, rtol=0 if runs == 1 else LOSS_RTOL)


# Measured on this project's 2-core x86 machine over the cases below (N = 12, 12 actor steps): the
# joint part kept by rank-3 updates is at most ~3e-7 of max |joint| from the two products; at the
# published size (N = 50, 50 actor steps) 5.4e-7 (``scripts/joint_drift_probe.py``,
# ``benchmarks/README.md``). Held to 2e-6 of max |joint|.
JOINT_RTOL = 2e-6


@pytest.mark.parametrize("runs", [1, 2])
def test_the_kept_joint_part_follows_the_full_products(monkeypatch, runs):
    """After every actor step the joint part kept by rank-3 updates (``ActorSteps.update_joint``) is
    the state part plus the whole action part of the current actions, to float32 order."""
    gaps = []
    plain = offpolicy.ActorSteps.update_joint

    def probe(self, agent, new):
        plain(self, agent, new)
        u = self.u.clone()
        u[:, agent] = new
        full = self.state_part + self.learner.critic.joint_actions(u)
        gaps.append(float((self.base - full).abs().max() / full.abs().max()))

    monkeypatch.setattr(offpolicy.ActorSteps, "update_joint", probe)
    learner = _learner(_cfgs(runs))
    rs = np.random.default_rng(0)
    lead = (runs, 4) if runs > 1 else (4,)
    for _ in range(3):
        tr = {k: rs.normal(size=(*lead, *shape)) for k, shape in learner.transition_layout().items()}
        tr["selected"] = (rs.random((*lead, 12)) < 0.3).astype(float)
        tr["done"][:] = 0.0
        learner.observe(tr)
    learner.train()
    assert len(gaps) == 12
    print(f"largest gap of the kept joint part: {max(gaps):.2e} of max |joint|")
    assert max(gaps) < JOINT_RTOL


@pytest.mark.parametrize(
    "runs,agent",
    [(1, {}), (2, {}), (1, {"mitigations": {"actor_layernorm": True}}), (2, {"algorithm": "maddpg"})],
)
def test_the_stepping_actors_own_leaves_give_the_same_gradients(monkeypatch, runs, agent):
    """The stepping actor's parameters as leaves of their own (``ActorSteps.sliced``: no full-size
    zero gradients per step) give the optimiser the gradients of the slices' path bit for bit."""
    cfgs = _cfgs(runs, **agent)
    sliced, loss_s, _ = _one_training_step(cfgs, monkeypatch, factorised=True)
    plain = offpolicy.ActorSteps.__init__

    def unsliced(self, *a, **k):
        plain(self, *a, **k)
        self.sliced = False

    monkeypatch.setattr(offpolicy.ActorSteps, "__init__", unsliced)
    whole, loss_w, _ = _one_training_step(cfgs, monkeypatch, factorised=True)
    assert len(sliced) == len(whole) == 12
    for (ag, gs), (ag2, gw) in zip(sliced, whole):
        assert torch.equal(torch.as_tensor(ag), torch.as_tensor(ag2))
        for x, y in zip(gs, gw):
            assert torch.equal(x, y)
    np.testing.assert_array_equal(loss_s, loss_w)


def _random_critic(runs: int, n: int = 6, hidden=(96, 40)):
    torch.manual_seed(3)
    one = MasterCritic(n, hidden=hidden)
    critic = PackedCritic(runs, one) if runs > 1 else one
    with torch.no_grad():
        for p in critic.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return critic


@pytest.mark.parametrize("chunk", [8, 13, 64, 100_000])
@pytest.mark.parametrize("rate", [0.02, 0.5, 1.0])
def test_the_hidden_layers_in_chunks_score_the_rows_as_the_gathered_pass(monkeypatch, chunk, rate):
    """``argmax.full_q`` with kept own parts (the hidden layers in cache-sized chunks,
    ``hidden_rows``; a short last chunk merged into the one before) gives every candidate row the
    value of ``rowwise_q`` over all the gathered rows, bit for bit (one torch thread)."""
    from ccm_madrl.agents import argmax

    monkeypatch.setattr(argmax, "CHUNK_ROWS", chunk)
    critic = _random_critic(1)
    b, n = 40, critic.n_agents
    s, u = torch.rand(b, n, 7), torch.rand(b, n, 3) * 2 - 1
    cand = torch.rand(b, n) < rate
    with torch.no_grad():
        joint, own, x = critic.joint(s, u), critic.own_rows(s, u), argmax.own_inputs(critic, s, u)
        want = torch.full(cand.shape, -torch.inf)
        want[cand] = argmax.rowwise_q(critic, argmax.rows_h1(critic, joint, x, cand, own))
        got = argmax.full_q(critic, joint, x, cand, own)
    assert torch.equal(got, want)


def _pack_rows(runs: int, per: int):
    """A random packed critic, a run-major batch and its candidate rows (sample, agent): run 1
    without a row, run 2 with three."""
    critic = _random_critic(runs)
    n = critic.n_agents
    s, u = torch.rand(runs * per, n, 7), torch.rand(runs * per, n, 3) * 2 - 1
    cand = torch.rand(runs * per, n) < 0.6
    cand[per : 2 * per] = False  # run 1: no row
    cand[2 * per : 3 * per] = False
    cand[2 * per, :3] = True  # run 2: three rows
    bi, ji = cand.nonzero(as_tuple=True)
    return critic, s, u, bi, ji


@pytest.mark.parametrize("chunk", [8, 11, 100_000])
def test_a_packs_rows_from_the_kept_own_parts_score_as_rows_q(monkeypatch, chunk):
    """``PackedCritic.rows_q_kept`` (each run's rows in chunks, gathered from the kept own parts) is
    ``rows_q`` on the gathered own parts bit for bit, with a run without rows and one with fewer
    rows than a chunk."""
    from ccm_madrl.agents import argmax

    monkeypatch.setattr(argmax, "CHUNK_ROWS", chunk)
    runs, per = 4, 12
    critic, s, u, bi, ji = _pack_rows(runs, per)
    n = critic.n_agents
    with torch.no_grad():
        joint, own = critic.joint(s, u), critic.own_rows(s, u)
        want = critic.rows_q(joint, bi, s[bi, ji], u[bi, ji], bi, own=own[bi, ji])
        got = critic.rows_q_kept(joint, bi, own.reshape(-1, own.shape[-1]), bi * n + ji)
    assert torch.equal(got, want)


@pytest.mark.parametrize("chunk", [8, 11, 100_000])
def test_a_packs_scored_rows_in_chunks_are_each_runs_critic_alone(monkeypatch, chunk):
    """``PackedCritic.rows_q`` without gradient (acting's scores, the TD target's maximum): each
    run's rows in chunks (``hidden_rows`` with the own parts' product chunk by chunk) score as the
    whole run's rows through its critic slice at once (the computation before the chunks) bit for
    bit, and so as that run's critic alone (``MasterCritic.rows_q`` on the same joint parts) where
    it has at least ``MIN_ROWS`` rows (fewer: not chunked, the computation before); with a run
    without rows and one with three."""
    import torch.nn.functional as F

    from ccm_madrl.agents import argmax

    monkeypatch.setattr(argmax, "CHUNK_ROWS", chunk)
    runs, per = 4, 12
    critic, s, u, bi, ji = _pack_rows(runs, per)
    n = critic.n_agents
    with torch.no_grad():
        joint = critic.joint(s, u)
        got = critic.rows_q(joint, bi, s[bi, ji], u[bi, ji], bi)
        x = argmax.own_inputs(critic, s[bi, ji], u[bi, ji])
        w1 = critic.fc1.weight[:, :, critic.joint_dim :]
        checked = 0
        for r in range(runs):
            mine = (bi >= r * per) & (bi < (r + 1) * per)
            if int(mine.sum()) < argmax.MIN_ROWS:  # not chunked (a GEMM of so few rows sums by
                continue  # the rows' place in memory: no reference to compare with bit for bit)
            checked += 1
            h = (joint[bi[mine]] + F.linear(x[mine], w1[r])).relu_()
            a = F.linear(h, critic.fc2.weight[r], critic.fc2.bias[r]).relu_()
            whole = F.linear(a, critic.fc3.weight[r], critic.fc3.bias[r]).squeeze(-1)
            assert torch.equal(got[mine], whole)
            alone = MasterCritic(n, hidden=critic.hidden)
            for dst, src in zip(alone.parameters(), critic.parameters()):
                dst.copy_(src[r].reshape(dst.shape))
            j = joint[r * per : (r + 1) * per]  # the joint parts as the pack computes them
            b, k = bi[mine] - r * per, ji[mine]
            assert torch.equal(got[mine], alone.rows_q(j, b, s[bi[mine], k], u[bi[mine], k]))
    assert checked == 2
    assert torch.isfinite(got).all() and got.shape == bi.shape


def _monitored_step(cfgs, fed: bool, monkeypatch, monitor: bool = True):
    """One training step (with the gradient-flow monitor measuring unless not ``monitor``); its rows,
    its last output pre-activations, the networks after the step, and what each ActorSteps was
    (``fed``: the monitor's hooks fed by the sliced forward; otherwise the full forward of every
    actor at every step)."""
    from ccm_madrl.monitor.core import GradientFlowMonitor

    learner = _learner(cfgs)
    if not fed:
        monkeypatch.setattr(BatchedActor, "hooks_fed", lambda self: False)
    built = []
    plain = offpolicy.ActorSteps.__init__

    def record(self, *a, **k):
        plain(self, *a, **k)
        built.append((self.sliced, self.kept is not None))

    monkeypatch.setattr(offpolicy.ActorSteps, "__init__", record)
    observe_random(learner, len(cfgs))
    mon = GradientFlowMonitor()
    if monitor:
        learner.attach_monitor(mon)
        mon.start_episode(0)
    learner.train()
    last_z = mon.roles["actors"].last_z.clone() if monitor else None
    rows = mon.end_episode(0) if monitor else None
    monkeypatch.undo()
    nets = [p.detach().clone() for p in [*learner.actors.parameters(), *learner.critic.parameters()]]
    return rows, last_z, nets, built


# The full forward (the monitor's path before its hooks were fed by the sliced forward) sums the
# actors' output-bias gradients over another layout: measured, 1 ulp-level gaps (~1e-11 absolute of
# ~1e-4) that move the networks after the first step, and the monitor's statistics with them, by
# at most ~1e-6 relative over a training step (N = 12). Held to 1e-4: far below a wrong or missing
# agent slice (order 1).
MONITOR_RTOL = 1e-4


@pytest.mark.parametrize(
    "runs,agent",
    [
        (1, {}),
        (2, {}),
        (1, {"mitigations": {"actor_layernorm": True}}),
        (2, {"architecture": {"activation": "linear_clip"}}),
    ],
)
def test_the_monitors_hooks_fed_by_the_sliced_forward_measure_as_the_full_forward(monkeypatch, runs, agent):
    """With the monitor attached, the stepping actor alone (its hooks fed with every agent's kept
    activations, ``ActorSteps.kept``): the networks are those of the run without the monitor, bit for
    bit, and the monitor measures what the full forward at every step gave it (every statistic,
    every agent's last output pre-activations), up to that path's own summation order."""
    cfgs = _cfgs(runs, **agent)
    rows_f, z_f, nets_f, built_f = _monitored_step(cfgs, True, monkeypatch)
    rows_o, z_o, nets_o, built_o = _monitored_step(cfgs, False, monkeypatch)
    _, _, nets_n, built_n = _monitored_step(cfgs, True, monkeypatch, monitor=False)
    assert built_f == [(True, True)] and built_o == [(False, False)] and built_n == [(True, False)]
    assert all(torch.equal(x, y) for x, y in zip(nets_f, nets_n))
    assert all(torch.allclose(x, y, rtol=MONITOR_RTOL, atol=1e-9) for x, y in zip(nets_f, nets_o))
    assert len(rows_f) == len(rows_o) > 0
    measured = 0
    for a, b in zip(rows_f, rows_o):
        assert a.keys() == b.keys()
        for k in a:
            va, vb = a[k], b[k]
            if isinstance(va, float):
                np.testing.assert_allclose(va, vb, rtol=MONITOR_RTOL, atol=1e-12, err_msg=k)
            elif not (isinstance(va, str) and a["role"] == "critic"):
                assert va == vb, (k, va, vb)
        measured += a["role"] == "actors" and a.get("grad_norm", 0.0) > 0
    assert measured == runs * 12  # every actor stepped, with a gradient the monitor saw
    torch.testing.assert_close(z_f, z_o, rtol=MONITOR_RTOL, atol=1e-9)
