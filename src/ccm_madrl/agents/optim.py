"""Per-agent optimisers over stacked parameters.

Every parameter tensor has the agent in dimension 0. Each agent keeps its own optimiser state
(moments and step count), so the N actors remain independent learners exactly as with N separate
``torch.optim`` optimisers; the arithmetic is that of PyTorch's single-tensor implementations
(``torch.optim.Adam`` / ``RMSprop`` / ``SGD`` with default options), operation by operation.
``step(grads, agent=i)`` updates only agent ``i`` (the published sequential actor update).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

StepHook = Callable[["BatchedOptimizer", Sequence[torch.Tensor], "int | None"], None]


def _adam(opt: BatchedOptimizer, p, g, m, v, lr: float, step: int) -> None:
    beta1, beta2 = opt.betas
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    denom = (v.sqrt() / bias_correction2**0.5).add_(opt.eps)
    p.addcdiv_(m, denom, value=-step_size)


def _rmsprop(opt: BatchedOptimizer, p, g, m, v, lr: float, step: int) -> None:
    v.mul_(opt.alpha).addcmul_(g, g, value=1 - opt.alpha)
    p.addcdiv_(g, v.sqrt().add_(opt.eps), value=-lr)


def _sgd(opt: BatchedOptimizer, p, g, m, v, lr: float, step: int) -> None:
    p.add_(g, alpha=-lr)


@dataclass(frozen=True)
class OptimizerRule:
    """One optimiser: PyTorch's class (the critic's), and the same arithmetic on stacked per-agent
    parameters (the actors'): ``update(opt, p, g, m, v, lr, step)`` with the first and second
    moments ``m``, ``v`` when it keeps them."""

    torch_class: type[torch.optim.Optimizer]
    update: Callable[..., None]
    first_moment: bool = False
    second_moment: bool = False


# agent.optimizer -> its rule; a registry of agents/parts.py, so the config accepts every name here
OPTIMIZERS: dict[str, OptimizerRule] = {
    "adam": OptimizerRule(torch.optim.Adam, _adam, first_moment=True, second_moment=True),
    "rmsprop": OptimizerRule(torch.optim.RMSprop, _rmsprop, second_moment=True),
    "sgd": OptimizerRule(torch.optim.SGD, _sgd),
}


def optimizer_rule(kind: str) -> OptimizerRule:
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown optimiser {kind!r}; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[kind]


class BatchedOptimizer:
    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        kind: str = "adam",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        alpha: float = 0.99,
        lr_scales: Sequence[float] | None = None,
    ):
        self.rule = optimizer_rule(kind)
        self.params = list(params)
        if not self.params:
            raise ValueError("params: empty parameter list")
        self.n = self.params[0].shape[0]
        if any(p.shape[0] != self.n for p in self.params):
            raise ValueError("params: every parameter must have the agent in dimension 0")
        self.kind, self.lr, self.betas, self.eps, self.alpha = kind, float(lr), betas, eps, alpha
        self.lr_scales = [1.0] * len(self.params) if lr_scales is None else [float(s) for s in lr_scales]
        if len(self.lr_scales) != len(self.params):
            raise ValueError("lr_scales: need one scale per parameter")
        self.steps = np.zeros(self.n, dtype=np.int64)
        self.m = [torch.zeros_like(p) for p in self.params] if self.rule.first_moment else []
        self.v = [torch.zeros_like(p) for p in self.params] if self.rule.second_moment else []
        self._pre_hooks: list[StepHook] = []

    # ------------------------------------------------------------------ hooks
    def register_step_pre_hook(self, hook: StepHook) -> Callable[[], None]:
        self._pre_hooks.append(hook)
        return lambda: self._pre_hooks.remove(hook)

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], agent: int | None = None) -> None:
        """Apply one update. ``grads`` match ``params`` (full stacked shapes)."""
        for h in self._pre_hooks:
            h(self, grads, agent)
        if agent is None:
            self.steps += 1
            if (self.steps == self.steps[0]).all():
                self._update(slice(None), grads, int(self.steps[0]))
            else:  # agents out of step (only after mixed single/all stepping): one at a time
                for i in range(self.n):
                    self._update(i, grads, int(self.steps[i]))
        else:
            if not 0 <= agent < self.n:
                raise IndexError(f"agent: {agent} out of range 0..{self.n - 1}")
            self.steps[agent] += 1
            self._update(agent, grads, int(self.steps[agent]))

    def _update(self, idx: int | slice, grads: Sequence[torch.Tensor], step: int) -> None:
        for k, (p, g) in enumerate(zip(self.params, grads)):
            m = self.m[k][idx] if self.m else None
            v = self.v[k][idx] if self.v else None
            self.rule.update(self, p.data[idx], g[idx], m, v, self.lr * self.lr_scales[k], step)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "lr": self.lr,
            "lr_scales": list(self.lr_scales),
            "steps": self.steps.copy(),
            "m": [t.detach().cpu().clone() for t in self.m],
            "v": [t.detach().cpu().clone() for t in self.v],
        }

    def load_state_dict(self, sd: dict) -> None:
        if sd["kind"] != self.kind:
            raise ValueError(f"optimizer state is for {sd['kind']!r}, not {self.kind!r}")
        self.steps = np.asarray(sd["steps"], dtype=np.int64).copy()
        for dst, src in zip(self.m, sd["m"]):
            dst.copy_(src)
        for dst, src in zip(self.v, sd["v"]):
            dst.copy_(src)


def make_torch_optimizer(kind: str, params, lr: float) -> torch.optim.Optimizer:
    """The critic's optimiser (a single network): PyTorch's own, default options."""
    return optimizer_rule(kind).torch_class(params, lr=lr)
