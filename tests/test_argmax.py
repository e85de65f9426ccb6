"""The actor loss's maximum with provably losing rows skipped (``agent.argmax_row_skip``) gives the
full pass's argmax, loss and gradients bit for bit, on real replay batches of trained learners."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ccm_madrl.agents.argmax import BoundedArgmax, full_q, own_inputs, rows_h1, rowwise_q
from ccm_madrl.experiment import build_config
from ccm_madrl.experiment.runner import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # exactness at one thread (conftest)

N = 20


def trained_learner(tmp_path, lr: float, episodes: int = 7):
    cfg = build_config(
        {
            "env": {"n_agents": N},
            "agent": {"actor_lr": lr},
            "training": {"episodes": episodes, "eval_episodes": 0, "tensorboard": False},
            "monitor": {"enabled": False},
        }
    )
    tr = Trainer(cfg, tmp_path / f"run_{lr:g}", progress=False, quiet=True)
    tr.run()
    return tr.learner


def one_step(learner, state, batch, w, skip: bool):
    """A training step from ``state`` with the skipping on or off: the argmax of every actor step,
    the statistics, and every tensor of the learner's state afterwards."""
    learner.load_state_dict(copy.deepcopy(state))
    learner.argmax_row_skip = skip
    args = []
    inner = type(learner).candidate_q

    def recording(joint, states, u, cand):
        q = inner(learner, joint, states, u, cand)
        args.append(q.max(dim=1).indices.clone())
        return q

    learner.candidate_q = recording
    before = list(learner.argmax_rows)
    try:
        stats = learner.train_step(batch, w)
    finally:
        del learner.candidate_q
    rows = [a - b for a, b in zip(learner.argmax_rows, before)]
    return args, stats, learner.state_dict(), rows


def tensors(sd, prefix=""):
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, dict):
            out.update(tensors(v, f"{prefix}{k}."))
        elif isinstance(v, list | tuple):
            out.update(tensors(dict(enumerate(v)), f"{prefix}{k}."))
    return out


@pytest.mark.parametrize("lr", [1e-4, 1e-2, 1e-1])
def test_skipping_is_bit_identical_to_the_full_pass_on_real_batches(tmp_path, lr):
    learner = trained_learner(tmp_path, lr)
    state = copy.deepcopy(learner.state_dict())
    rs = np.random.default_rng(1)
    skipped = 0
    for _ in range(3):
        batch, _, w = learner.replay.sample(64, rs)
        a_full, s_full, sd_full, rows_full = one_step(learner, state, batch, w, skip=False)
        a_skip, s_skip, sd_skip, rows_skip = one_step(learner, state, batch, w, skip=True)
        assert len(a_full) == len(a_skip) == N
        for k, (x, y) in enumerate(zip(a_full, a_skip)):
            assert torch.equal(x, y), f"actor step {k}: argmax differs"
        assert s_full["actor_loss"] == s_skip["actor_loss"]
        full, skip = tensors(sd_full), tensors(sd_skip)
        assert full.keys() == skip.keys()
        for k in full:
            assert torch.equal(full[k], skip[k]), k  # weights, targets, Adam moments: bit-identical
        assert rows_full[0] == rows_skip[0] == rows_full[1]  # the same candidate rows were scored
        skipped += rows_skip[0] - rows_skip[1]
    if lr == 1e-4:  # small steps: most rows are provably below their sample's best
        assert skipped > 0


def test_rowwise_q_does_not_depend_on_the_other_rows():
    torch.manual_seed(0)
    learner_critic = torch.nn.Module()
    learner_critic.fc2 = torch.nn.Linear(64, 16)
    learner_critic.fc3 = torch.nn.Linear(16, 1)
    h = torch.randn(300, 64)
    full = rowwise_q(learner_critic, h.clone())
    for m in (1, 2, 3, 5, 9, 17, 299):
        idx = torch.randperm(300)[:m]
        assert torch.equal(rowwise_q(learner_critic, h[idx].clone()), full[idx])


def _critic(n=6, hidden=(32, 16), seed=0):
    from ccm_madrl.agents.networks import MasterCritic

    torch.manual_seed(seed)
    return MasterCritic(n, hidden=hidden)


def test_exact_ties_keep_the_first_candidate():
    """A critic whose second layer is dead everywhere scores every row b3 exactly: all ties. The
    bounded pass must return the full pass's first maximal index."""
    critic = _critic()
    with torch.no_grad():
        critic.fc2.bias.fill_(-1e6)
    s, u = torch.rand(16, 6, 7), torch.rand(16, 6, 3) * 2 - 1
    ba = BoundedArgmax(critic)
    for step in range(4):
        u = u.clone()
        u[:, step] += 0.01
        joint, x = critic.joint(s, u).detach(), own_inputs(critic, s, u)
        cand = u[..., 0] >= 0
        f, g = full_q(critic, joint, x, cand), ba.scores(joint, x, cand)
        assert torch.equal(f.max(-1).indices, g.max(-1).indices)
        assert torch.equal(f.max(-1).values, g.max(-1).values)


def test_leading_run_dimension_and_skips_when_changes_are_small():
    """(R, B) leading dimensions: the same maxima as the full pass per run, and small action
    changes let most rows be skipped."""
    critic = _critic()
    s, u = torch.rand(3, 16, 6, 7), torch.rand(3, 16, 6, 3) * 2 - 1
    ba = BoundedArgmax(critic)
    for step in range(6):
        u = u.clone()
        u[..., step, :] = (u[..., step, :] + 1e-4).clamp(-1, 1)
        joint, x = (
            critic.joint(s.reshape(48, 6, 7), u.reshape(48, 6, 3)).reshape(3, 16, -1),
            own_inputs(critic, s, u),
        )
        cand = u[..., 0] >= 0
        f, g = full_q(critic, joint, x, cand), ba.scores(joint, x, cand)
        assert torch.equal(f.max(-1).indices, g.max(-1).indices)
        assert torch.equal(f.max(-1).values, g.max(-1).values)
    assert ba.skipped_fraction > 0.3


def test_rows_h1_matches_the_critic_first_layer():
    critic = _critic()
    s, u = torch.rand(4, 6, 7), torch.rand(4, 6, 3)
    joint, x = critic.joint(s, u), own_inputs(critic, s, u)
    mask = torch.rand(4, 6) > 0.4
    bi, ji = mask.nonzero(as_tuple=True)
    ref = joint[bi] + critic.own(s[bi, ji], u[bi, ji])
    torch.testing.assert_close(rows_h1(critic, joint, x, mask), ref)


def test_more_than_one_thread_falls_back_to_the_full_pass(tmp_path):
    learner = trained_learner(tmp_path, 1e-2, episodes=3)
    batch, _, w = learner.replay.sample(learner.batch_size, np.random.default_rng(0))
    state = copy.deepcopy(learner.state_dict())
    torch.set_num_threads(2)
    _, _, _, rows = one_step(learner, state, batch, w, skip=True)
    assert rows[0] > 0 and rows[0] == rows[1]  # every candidate row evaluated
    torch.set_num_threads(1)
    _, _, _, rows = one_step(learner, state, batch, w, skip=True)
    assert rows[1] < rows[0]  # one thread: rows skipped
