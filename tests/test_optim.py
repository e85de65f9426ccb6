"""The batched per-agent optimiser equals N independent torch optimisers."""

from __future__ import annotations

import pytest
import torch

from ccm_madrl.agents.optim import BatchedOptimizer


@pytest.mark.parametrize("kind", ["adam", "rmsprop", "sgd"])
def test_matches_independent_torch_optimisers(kind):
    torch.manual_seed(0)
    n = 4
    w = torch.nn.Parameter(torch.randn(n, 5, 3))
    b = torch.nn.Parameter(torch.randn(n, 5))
    refs = [
        (torch.nn.Parameter(w[i].detach().clone()), torch.nn.Parameter(b[i].detach().clone()))
        for i in range(n)
    ]
    cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}[kind]
    ref_opts = [cls(list(r), lr=1e-2) for r in refs]
    opt = BatchedOptimizer([w, b], kind, lr=1e-2)
    for step in range(6):
        gw, gb = torch.randn(n, 5, 3) * 10 ** (step % 3), torch.randn(n, 5)
        if step % 2:  # sequential: agents one at a time
            for i in range(n):
                opt.step([gw, gb], agent=i)
                refs[i][0].grad, refs[i][1].grad = gw[i].clone(), gb[i].clone()
                ref_opts[i].step()
        else:
            opt.step([gw, gb])
            for i in range(n):
                refs[i][0].grad, refs[i][1].grad = gw[i].clone(), gb[i].clone()
                ref_opts[i].step()
    for i in range(n):
        torch.testing.assert_close(w[i], refs[i][0], rtol=0, atol=0)
        torch.testing.assert_close(b[i], refs[i][1], rtol=0, atol=0)


def test_single_agent_step_leaves_others_untouched():
    w = torch.nn.Parameter(torch.ones(3, 2))
    opt = BatchedOptimizer([w], "adam", lr=0.1)
    opt.step([torch.ones(3, 2)], agent=1)
    assert (w[0] == 1).all() and (w[2] == 1).all() and (w[1] < 1).all()
    assert opt.steps.tolist() == [0, 1, 0]


def test_layerwise_lr_scale_scales_the_adam_step():
    w1 = torch.nn.Parameter(torch.zeros(2, 3))
    w2 = torch.nn.Parameter(torch.zeros(2, 3))
    opt = BatchedOptimizer([w1, w2], "adam", lr=0.1, lr_scales=[1.0, 0.1])
    g = torch.randn(2, 3)
    opt.step([g, g])
    torch.testing.assert_close(w2, w1 * 0.1)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown optimiser 'adagrad'"):
        BatchedOptimizer([torch.nn.Parameter(torch.zeros(2, 1))], "adagrad")
    with pytest.raises(ValueError, match="dimension 0"):
        BatchedOptimizer([torch.nn.Parameter(torch.zeros(2, 1)), torch.nn.Parameter(torch.zeros(3, 1))])
