"""The batched learner reproduces the published implementation's agent golden vectors."""

from __future__ import annotations

import numpy as np

from ccm_madrl.agents import AgentConfig, CCMLearner
from ccm_madrl.cli import main
from ccm_madrl.mec import MECConfig, RunRNG
from ccm_madrl.parity import check_file


def test_agent_golden_passes(agent_golden):
    rep = check_file(agent_golden)
    assert rep.kind == "agent"
    failed = [(c.quantity, c.max_abs, c.max_rel, c.note) for c in rep.checks if not c.passed]
    assert not failed, failed
    by = {c.quantity: c for c in rep.checks}
    assert by["critic gradients"].max_rel < 1e-4
    assert by["actor gradients (50 actors, sequential)"].max_rel < 1e-4
    assert by["priority errors"].max_rel < 1e-4
    assert sum(1 for q in by if q.endswith("master decision")) == 4


def test_reference_init_reproduces_published_initial_weights(agent_golden):
    """With the golden's torch seed, the published construction order gives its initial weights."""
    g = np.load(agent_golden)
    learner = CCMLearner(MECConfig(), AgentConfig(), RunRNG("reference", int(g["torch_seed"]), 37))
    for i in (0, 17, 49):
        sd = learner.actors.agent_state_dict(i)
        for k, v in sd.items():
            np.testing.assert_array_equal(v.numpy(), g[f"init/actor{i}.{k}"])
    for k, v in learner.critic.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), g[f"init/critic.{k}"])


def test_sequential_differs_from_simultaneous_on_the_golden_batch(agent_golden, tmp_path):
    """The update order is a real option: simultaneous gives different actor weights after the step."""
    g = np.load(agent_golden)
    with np.load(agent_golden) as z:
        d = {k: z[k] for k in z.files}
    assert main(["parity", str(agent_golden)]) == 0
    rep_seq = check_file(agent_golden)
    assert rep_seq.passed
    # change the file to claim nothing; instead run simultaneous and compare actor 49's step
    cfg = AgentConfig(actor_update="simultaneous")
    learner = CCMLearner(MECConfig(), cfg, RunRNG("reference", int(g["torch_seed"]), 37))
    import torch

    b = 64
    stack = lambda name: torch.tensor(
        np.stack([d[f"batch/{name}/{i}"] for i in range(b)]), dtype=torch.float32
    )  # noqa: E731
    batch = {
        "states": stack("states"),
        "actions": stack("actor_actions"),
        "selected": stack("critic_actions"),
        "reward": stack("rewards")[:, 0],
        "next_states": stack("next_states"),
        "done": stack("dones"),
    }
    learner.train_step(batch, d["batch/is_weights"])
    after_sim = learner.actors.agent_state_dict(49)["fc1.weight"].numpy()
    assert not np.allclose(after_sim, d["after/actor49.fc1.weight"], atol=1e-7)
    # the control: the sequential learner, built and stepped the same way, does reach the golden
    seq = CCMLearner(MECConfig(), AgentConfig(), RunRNG("reference", int(g["torch_seed"]), 37))
    seq.train_step(batch, d["batch/is_weights"])
    after_seq = seq.actors.agent_state_dict(49)["fc1.weight"].numpy()
    np.testing.assert_allclose(after_seq, d["after/actor49.fc1.weight"], rtol=1e-4, atol=1e-6)


def test_agent_checks_record_their_tolerance_and_rtol_atol_replace_them(agent_golden, capsys):
    from ccm_madrl.parity import ADAM_STEPS, AFTER_ATOL, GRAD_RTOL, SELECT_ATOL

    by = {c.quantity: c for c in check_file(agent_golden).checks}
    assert str(by["critic gradients"].tolerance) == "rtol 0.0001"
    assert by["priority errors"].tolerance.value == GRAD_RTOL
    assert by["select0 actor action"].tolerance.value == SELECT_ATOL
    assert by["weights after step: critic"].tolerance.value == AFTER_ATOL
    # elements with a ~0 golden gradient: at most one Adam step apart (2.5 x critic lr 1e-3)
    assert by["weights after step: critic, |grad| < 1e-06"].tolerance.value == ADAM_STEPS * 1e-3
    assert all(c.tolerance is None for q, c in by.items() if q.endswith("master decision"))
    for c in by.values():
        if c.tolerance is not None:
            err = c.max_rel if c.tolerance.kind == "rtol" else c.max_abs
            assert c.margin == err / c.tolerance.value and c.passed == (c.margin <= 1), c.quantity

    # an absurdly tight rtol fails the gradients (float32 sums differ in order), not the atol checks
    tight = {c.quantity: c for c in check_file(agent_golden, rtol=1e-30).checks}
    assert not tight["critic gradients"].passed and not tight["priority errors"].passed
    assert tight["critic gradients"].margin > 1e20
    assert all(c.passed for c in tight.values() if c.tolerance is None or c.tolerance.kind == "atol")
    capsys.readouterr()
    assert main(["parity", "--rtol", "1e-30", str(agent_golden)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "FAIL" in out and "--rtol 1e-30 (not the defaults): rtol 1e-30 (default 0.0001)" in out
    # --atol replaces the absolute ones; the near-zero-gradient elements keep one Adam step
    tight = {c.quantity: c for c in check_file(agent_golden, atol=1e-30).checks}
    assert not tight["select0 actor action"].passed and not tight["weights after step: critic"].passed
    assert tight["weights after step: critic, |grad| < 1e-06"].tolerance.value == ADAM_STEPS * 1e-3
    assert tight["critic gradients"].passed
