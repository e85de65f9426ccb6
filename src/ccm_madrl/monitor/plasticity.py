"""Plasticity measures of the loss-of-plasticity literature, batched over the agents of an ensemble.

Features are a hidden layer's activations on a training batch: a tensor ``(agents, samples, units)``
with a mask ``valid`` ``(agents, samples)`` of the rows that count (a batched ensemble may pad an
agent's rows). Every function returns one value per agent (float64). Definitions, formulas and
references: ``docs/monitor.md`` (section "Plasticity").

- :func:`stable_rank`: srank_delta of Kumar et al. (2021), delta = 0.01: the fewest singular values
  whose sum reaches 1 - delta of the sum of all;
- :func:`effective_rank`: Roy & Vetterli (2007), exp of the entropy of the normalised singular
  values (as Lyle et al. 2022 and Dohare et al. 2024 use it);
- :func:`feature_stats`: fraction of active units, feature norm, feature variance;
- :func:`padding_rows`: the rows a batched ensemble adds to even out its agents' row counts.
"""

from __future__ import annotations

import torch
from torch import nn

SRANK_DELTA = 0.01  # Kumar et al. (2021)
SATURATED = 0.99  # a bounded unit with |h| > 0.99 (a sigmoid's: h < 0.01 or h > 0.99) is not active

# hidden activation modules whose outputs are the features, by how "active" is judged
RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish)
SYMMETRIC_BOUNDED = (nn.Tanh, nn.Softsign, nn.Hardtanh)
UNIT_BOUNDED = (nn.Sigmoid,)
FEATURES = (
    "active_units",
    "feature_norm",
    "feature_variance",
)
RANKS = ("stable_rank", "effective_rank")


def activation_kind(m: nn.Module) -> str | None:
    """``"relu"`` (active: h > 0), ``"bounded"`` (active: |h| <= 0.99), ``"sigmoid"`` (active:
    0.01 <= h <= 0.99) or None for a module that is not a hidden activation."""
    if isinstance(m, RELU_LIKE):
        return "relu"
    if isinstance(m, UNIT_BOUNDED):
        return "sigmoid"
    if isinstance(m, SYMMETRIC_BOUNDED) or getattr(m, "bounded", False) is True:
        return "bounded"
    return None


def active(h: torch.Tensor, kind: str) -> torch.Tensor:
    """Elementwise: the unit is active on the sample (Plasticine's fraction of active units)."""
    if kind == "relu":
        return h > 0
    if kind == "sigmoid":
        return (h >= 1 - SATURATED) & (h <= SATURATED)
    return h.abs() <= SATURATED


def padding_rows(pre: torch.Tensor) -> torch.Tensor:
    """(agents, samples) mask of padding: the rows at the end of an agent's batch that repeat its
    first row exactly (in the pre-activation). A batched ensemble whose agents have different row
    counts pads each agent's rows so (``agents.networks.grouped_rows``); the first row is never
    padding."""
    if pre.shape[1] < 2 or not bool((pre[:, -1] == pre[:, 0]).all(-1).any()):
        return torch.zeros(pre.shape[:2], dtype=torch.bool, device=pre.device)  # no last row repeats
    same = (pre == pre[:, :1]).all(-1)
    same[:, 0] = False
    return same.flip(1).cumprod(1).flip(1).bool()


def singular_values(h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Singular values (descending) of each agent's feature matrix, its padding rows set to zero
    (a zero row changes no singular value): one batched ``torch.linalg.svdvals``."""
    x = torch.where(valid.unsqueeze(-1), h, torch.zeros((), dtype=h.dtype, device=h.device))
    return torch.linalg.svdvals(x.float()).double()


def stable_rank(sv: torch.Tensor, delta: float = SRANK_DELTA) -> torch.Tensor:
    """srank_delta = min{k : sum_{i<=k} s_i >= (1 - delta) sum_i s_i} (s descending); 0 for a zero
    matrix."""
    total = sv.sum(-1, keepdim=True)
    cum = sv.cumsum(-1) / total.clamp_min(torch.finfo(sv.dtype).tiny)
    k = (cum < 1 - delta).sum(-1) + 1
    return torch.where(total.squeeze(-1) > 0, k, 0).double()


def effective_rank(sv: torch.Tensor) -> torch.Tensor:
    """erank = exp(-sum_i p_i log p_i), p_i = s_i / sum_j s_j (0 log 0 = 0); 0 for a zero matrix."""
    total = sv.sum(-1, keepdim=True)
    p = sv / total.clamp_min(torch.finfo(sv.dtype).tiny)
    h = -torch.special.xlogy(p, p).sum(-1)
    return torch.where(total.squeeze(-1) > 0, h.exp(), 0.0)


def feature_stats(h: torch.Tensor, valid: torch.Tensor, kind: str) -> dict[str, torch.Tensor]:
    """Per agent, over its valid rows b = 1..n and units j = 1..U:
    ``active_units`` = mean_bj [active(h_bj)], ``feature_norm`` = mean_b ||h_b||_2,
    ``feature_variance`` = mean_j Var_b(h_bj) (population variance over the samples).
    Every row valid (no padding): float32 reductions; else masked batched products in float64."""
    if bool(valid.all()):  # (torch.var over the rows is ~50x slower than these on a CPU)
        m, units = h.shape[1], h.shape[2]
        d = h - h.sum(1, keepdim=True) / m
        return {
            "active_units": torch.count_nonzero(active(h, kind), dim=(1, 2)).double() / (m * units),
            "feature_norm": torch.linalg.vector_norm(h, dim=-1).double().mean(1),
            "feature_variance": ((d * d).sum(1) / m).double().mean(-1),
        }
    x = h.double()
    w = valid.double().unsqueeze(1)  # (agents, 1, rows)
    n = w.sum(-1).clamp_min(1)  # (agents, 1)
    units = h.shape[-1]
    x2 = x * x
    act = torch.bmm(w, active(h, kind).double()).sum(-1) / (n * units)
    norm = torch.bmm(w, x2.sum(-1, keepdim=True).sqrt()).squeeze(-1) / n
    mean = torch.bmm(w, x) / n.unsqueeze(-1)  # (agents, 1, units)
    var = (torch.bmm(w, x2) / n.unsqueeze(-1) - mean * mean).clamp_min(0)
    return {"active_units": act[:, 0], "feature_norm": norm[:, 0], "feature_variance": var.mean(-1)[:, 0]}


def ranks(h: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """``stable_rank`` and ``effective_rank`` of each agent's features (one batched SVD)."""
    sv = singular_values(h, valid)
    return {"stable_rank": stable_rank(sv), "effective_rank": effective_rank(sv)}
