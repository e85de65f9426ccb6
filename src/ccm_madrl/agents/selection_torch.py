"""The master's greedy selection (:mod:`ccm_madrl.agents.selection`) as batched torch operations on
the environments' device, for evaluation on a device: no loop over environments, no host copy.

Equal to the NumPy selection (``tests/test_torch_env.py``) except in two measure-zero cases, which
are flagged rather than resolved: a proposers' total size within 1e-9 relative of ``S_E`` (NumPy
re-sums those in its own order; here ``near`` marks them) and ties of Q among ranked agents or a
proposer with ``u[0] == 0`` exactly (its Q is -inf like the unranked agents', and NumPy's unstable
``argsort`` orders such ties its own way; here the order is stable, reversed).
Exploration (the coin and the random subset, drawn from the run's host streams) is not here.
"""

from __future__ import annotations

import torch


def proposals_exceed_torch(
    u0: torch.Tensor, size: torch.Tensor, limit: int, s_e: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Proposal mask (E, N), whether the proposals exceed the limits (E,), and whether the total size
    lies within 1e-9 relative of ``s_e`` (E,), where the NumPy selection re-sums in its own order."""
    prop = u0 >= 0
    total = torch.where(prop, size, torch.zeros_like(size)).sum(dim=-1)
    exceeded = (prop.sum(dim=-1) > limit) | (total > s_e)
    return prop, exceeded, (total - s_e).abs() <= 1e-9 * s_e


def accept_in_order_torch(
    order: torch.Tensor, u0: torch.Tensor, size: torch.Tensor, limit: int, s_e: float
) -> torch.Tensor:
    """Visit agents in ``order`` (E, N) and accept proposals within the limits, as
    :func:`~ccm_madrl.agents.selection.accept_in_order` (same running sum). Returns 0/1 (E, N)."""
    sel = torch.zeros_like(size)
    count = torch.zeros(size.shape[0], dtype=torch.long, device=size.device)
    accepted = torch.zeros_like(size[:, 0])
    for pos in range(order.shape[1]):  # sequential by definition: the limits fill in order
        k = order[:, pos : pos + 1]
        s_k = size.gather(1, k)[:, 0]
        ok = (u0.gather(1, k)[:, 0] >= 0) & (count < limit) & (accepted + s_k < s_e)
        sel.scatter_(1, k, ok.to(sel.dtype)[:, None])
        count = count + ok
        accepted = torch.where(ok, accepted + s_k, accepted)
    return sel


def greedy_master_select_torch(
    u: torch.Tensor, size: torch.Tensor, q: torch.Tensor, limit: int, s_e: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The master's greedy (evaluation) decision for E environments, as
    :func:`~ccm_madrl.agents.selection.master_select` with ``explore=False``: ``u`` (E, N, 3) actor
    outputs, ``size`` (E, N), ``q`` (E, N) the candidates' Q, -inf where ``u[..., 0] <= 0``.
    Returns (selected 0/1 (E, N), exceeded (E,), near the storage bound (E,))."""
    u0 = u[..., 0]
    prop, exceeded, near = proposals_exceed_torch(u0, size, limit, s_e)
    order = torch.argsort(q, dim=-1, stable=True).flip(-1)  # NumPy: argsort(q)[:, ::-1]
    greedy = accept_in_order_torch(order, u0, size, limit, s_e)
    return torch.where(exceeded[:, None], greedy, prop.to(size.dtype)), exceeded, near
