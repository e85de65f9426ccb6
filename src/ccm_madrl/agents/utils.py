"""Generic pieces of the learners: a running mean and variance, per-agent gradient clipping, target
network copies, and the MEC hybrid action."""

from __future__ import annotations

import numpy as np
import torch

from ..mec.dynamics import scale_fraction


class RunningMeanStd:
    """Running mean and (population) variance of a stream, updated by batches with Chan et al.'s
    parallel formula: for a batch of n values with mean m_b and sum of squared deviations S_b,
    delta = m_b - mean; mean += delta * n / (count + n); M2 += S_b + delta^2 * count * n / (count + n)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        n = x.size
        if n == 0:
            return
        bm = float(x.mean())
        tot = self.count + n
        delta = bm - self.mean
        self.mean += delta * n / tot
        self.m2 += float(((x - bm) ** 2).sum()) + delta**2 * self.count * n / tot
        self.count = tot

    @property
    def var(self) -> float:
        return self.m2 / self.count if self.count else 1.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, sd: dict) -> None:
        self.count, self.mean, self.m2 = int(sd["count"]), float(sd["mean"]), float(sd["m2"])


def clip_per_agent_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each agent's gradient (dimension 0 of every tensor) to a global L2 norm of ``max_norm``,
    in place, with ``torch.nn.utils.clip_grad_norm_``'s formula. Returns the norms before clipping."""
    sq = sum(g.pow(2).reshape(g.shape[0], -1).sum(1) for g in grads)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(-1, *([1] * (g.dim() - 1))))
    return norms


def hybrid_action(selected: np.ndarray, u: np.ndarray) -> np.ndarray:
    h = np.empty_like(u)
    h[..., 0] = selected
    h[..., 1] = scale_fraction(u[..., 1])
    h[..., 2] = scale_fraction(u[..., 2])
    return h


def hard_update(target: torch.nn.Module, source: torch.nn.Module, agent: int | None = None) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            if agent is None:
                t.copy_(s)
            elif isinstance(agent, torch.Tensor):  # several agents (a pack: agent i of every run)
                t[agent] = s[agent]
            else:
                t[agent].copy_(s[agent])
