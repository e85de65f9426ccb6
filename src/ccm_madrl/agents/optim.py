"""Per-agent optimisers over stacked parameters.

Every parameter tensor has the agent in dimension 0. Each agent keeps its own optimiser state
(moments and step count), so the N actors remain independent learners exactly as with N separate
``torch.optim`` optimisers; the arithmetic is that of PyTorch's single-tensor implementations
(``torch.optim.Adam`` / ``RMSprop`` / ``SGD`` with default options), operation by operation.
``step(grads, agent=i)`` updates only agent ``i`` (the published sequential actor update); ``agent``
may also be a tensor of indices (a pack steps agent ``i`` of every run at once). ``lr`` may be one
learning rate per agent (a pack of runs with different learning rates): the arithmetic per agent is
then that of its own scalar learning rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..config.imports import Registry

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
OPTIMIZERS: dict[str, OptimizerRule] = Registry({
    "adam": OptimizerRule(torch.optim.Adam, _adam, first_moment=True, second_moment=True),
    "rmsprop": OptimizerRule(torch.optim.RMSprop, _rmsprop, second_moment=True),
    "sgd": OptimizerRule(torch.optim.SGD, _sgd),
}, "optimizer")


def optimizer_rule(kind: str) -> OptimizerRule:
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown optimiser {kind!r}; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[kind]


class BatchedOptimizer:
    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        kind: str = "adam",
        lr: float | Sequence[float] = 1e-4,
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
        per_agent_lr = np.ndim(lr) > 0
        if per_agent_lr and np.shape(lr) != (self.n,):
            raise ValueError(f"lr: need one learning rate per agent ({self.n}), got shape {np.shape(lr)}")
        # one lr per agent (float64, as the scalar path computes in Python floats) or None
        self.lr_vec = np.asarray(lr, dtype=np.float64).copy() if per_agent_lr else None
        self.lr = float(np.asarray(lr).ravel()[0]) if per_agent_lr else float(lr)
        self.kind, self.betas, self.eps, self.alpha = kind, betas, eps, alpha
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
    def step(self, grads: Sequence[torch.Tensor], agent: int | torch.Tensor | None = None) -> None:
        """Apply one update. ``grads`` match ``params`` (full stacked shapes)."""
        for h in self._pre_hooks:
            h(self, grads, agent)
        if isinstance(agent, torch.Tensor):  # several agents, each one step (a pack's agent i of every run)
            idx = agent.cpu().numpy()
            self.steps[idx] += 1
            if (self.steps[idx] == self.steps[idx[0]]).all():
                self._update(agent.to(self.params[0].device), grads, int(self.steps[idx[0]]))
            else:
                for i in idx.tolist():
                    self._update(i, grads, int(self.steps[i]))
            return
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

    def _update(self, idx: int | slice | torch.Tensor, grads: Sequence[torch.Tensor], step: int) -> None:
        if self.lr_vec is not None or isinstance(idx, torch.Tensor):
            return self._update_per_agent(idx, grads, step)
        for k, (p, g) in enumerate(zip(self.params, grads)):
            m = self.m[k][idx] if self.m else None
            v = self.v[k][idx] if self.v else None
            self.rule.update(self, p.data[idx], g[idx], m, v, self.lr * self.lr_scales[k], step)

    def _update_per_agent(
        self, idx: int | slice | torch.Tensor, grads: Sequence[torch.Tensor], step: int
    ) -> None:
        """The same update with one learning rate per agent (a tensor broadcast over each agent's
        slice; ``p - (s * m) / d`` is ``addcdiv``'s arithmetic with value ``-s``). A tensor ``idx``
        gathers the agents' slices and writes them back."""
        gather = isinstance(idx, torch.Tensor)
        n_idx = self.n if isinstance(idx, slice) else (len(idx) if gather else 1)
        rows = np.arange(self.n)[idx.cpu().numpy() if gather else idx]
        lr_all = self.lr_vec if self.lr_vec is not None else np.full(self.n, self.lr)
        beta1, beta2 = self.betas
        for k, (p, g) in enumerate(zip(self.params, grads)):
            lr = lr_all[rows] * self.lr_scales[k]  # float64, as the scalar path
            shape = (n_idx, *([1] * (p.dim() - 1))) if np.ndim(rows) else ()
            p_, g_ = p.data[idx], g[idx]
            if self.kind == "adam":
                m, v = self.m[k][idx], self.v[k][idx]
                m.lerp_(g_, 1 - beta1)
                v.mul_(beta2).addcmul_(g_, g_, value=1 - beta2)
                step_size = torch.as_tensor(lr / (1 - beta1**step), dtype=p.dtype, device=p.device)
                denom = (v.sqrt() / (1 - beta2**step) ** 0.5).add_(self.eps)
                p_.sub_(step_size.reshape(shape) * m / denom)
                if gather:
                    self.m[k][idx], self.v[k][idx] = m, v
            elif self.kind == "rmsprop":
                v = self.v[k][idx]
                v.mul_(self.alpha).addcmul_(g_, g_, value=1 - self.alpha)
                lr_t = torch.as_tensor(lr, dtype=p.dtype, device=p.device).reshape(shape)
                p_.sub_(lr_t * g_ / v.sqrt().add_(self.eps))
                if gather:
                    self.v[k][idx] = v
            else:
                p_.addcmul_(g_, -torch.as_tensor(lr, dtype=p.dtype, device=p.device).reshape(shape))
            if gather:
                p.data[idx] = p_

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
