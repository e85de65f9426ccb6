"""Which candidate row wins the actor loss's maximum, without gradient: a full pass over every
candidate row, or the same answer with the rows that provably cannot win left out.

The actor loss of CCM-MADRL is ``-mean_b w_b max_j Q(S_b, U_b, s_bj, u_bj)`` over the candidate
rows j of sample b; its gradient flows through the winning row only, so the learner first finds
the winner of every sample with one gradient-free pass (``rowwise_q``) and then recomputes that row
with gradient. In the published (sequential) update order this pass runs once per actor step, N
times per training step, and is almost all of the training step's arithmetic.

**Row-invariant evaluation.** ``rowwise_q`` computes each row's Q so that its value does not depend
on which or how many other rows are evaluated with it, at one torch thread (with two, BLAS splits the
hidden layer's sums differently by row count: measured, a test pins one thread, and the learner uses
the skipping only at one thread) (on the CPU: the hidden layer as a GEMM of at
least ``MIN_ROWS`` rows, the output layer as a per-row dot product; a GEMV or a GEMM with very few
rows sums in another order). So evaluating a subset of the rows gives bit-identical values for
those rows, and the maximum over a subset that provably contains the winner is the full pass's
maximum, ties included (torch's ``max`` returns the first maximal index in both).

**Bounded row skipping** (:class:`BoundedArgmax`, ``agent.argmax_row_skip``). Between two actor
steps of one training step the critic is fixed and only the stepping agent's actions change, so
the first-layer pre-activation ``h_bj = J_b + W_own x_bj`` of every row moves by a small, computable
amount: the joint part ``J_b`` (shared by the rows of sample b) by ``dJ_b``, the own part by
``W_own dx_bj``. Above the first layer the critic's head is ``Q = w3 . relu(W2 relu(h) + b2) + b3``;
ReLU is 1-Lipschitz elementwise, so ``|dQ| <= c . |dh|`` with ``c = |W2|^T |w3|`` (elementwise
absolute values), and also ``|dQ| <= ||w3||_2 ||W2||_2 ||dh||_2`` (spectral norm); the smaller of
the two is used. Each row keeps its last exactly computed value ``q_ref`` and the bound since then,
so its current value lies in ``[q_ref - bound, q_ref + bound]``. The rows whose upper end reaches
the best lower end of their sample are recomputed exactly; the others are below the winner and are
skipped. The joint drift is accumulated step by step (triangle inequality), the own drift is
measured against the row's input at its last exact computation.

**Float safety margin.** The bounds hold for the real-valued head evaluated at the float inputs;
the computed values differ from it by rounding. For a sum of n products computed in any order in
floating point with unit roundoff u, the error is at most ``gamma_n * sum |terms|`` with
``gamma_n = n u / (1 - n u)``. Every error of a row (own part, K = state + action dim; its addition
to ``J``; the hidden layer, K = H1; the output, K = H2) is bounded by ``gamma_n * S_bj`` with
``n = D + H1 + H2 + 3`` and ``S_bj = c . |J_b| + c_own . |x_bj| + |w3| . |b2| + |b3|``
(``c_own = |W_own|^T c``), an upper bound of ``|w3|^T (|W2| |relu h| + |b2|) + |b3|``. Each row's
interval is widened by ``2 gamma_n S`` at its last exact evaluation and again at the current one
(evaluation error plus the rounding of ``h``, twice over), and the bound itself by a relative 1e-3
for the rounding of its own float32 sums. u is 2^-24 for float32 matmuls ('highest' precision), 2^-11
for TF32 ('high') and 2^-8 for bfloat16 ('medium').

Shapes: every per-row tensor is ``(*lead, N)`` with any leading dimensions (one batch ``(B,)``, or
runs x batch ``(R, B)``); the exact evaluation of the surviving rows is a caller's function of a
boolean mask, so one gather over the flattened batch serves packed runs too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

MIN_ROWS = 8  # fewer rows take BLAS paths that sum in another order (measured: 1-3 rows)
CHUNK_ROWS = 256  # rows per chunk of the hidden layers (:func:`hidden_rows`): 2 x 512 KiB at H1 = 512

UNIT_ROUNDOFF = {"highest": 2.0**-24, "high": 2.0**-11, "medium": 2.0**-8}
BOUND_REL_SLACK = 1e-3  # the bound's own float32 sums (relative error <= gamma_512 ~ 3e-5)


def rowwise_q(critic, h1_pre: torch.Tensor) -> torch.Tensor:
    """Q of each row (R,) from its first-layer pre-activation (R, H1) (overwritten), no gradient; each
    row's value is independent of the other rows evaluated with it (see the module docstring)."""
    r = h1_pre.shape[0]
    if r < MIN_ROWS:
        h1_pre = torch.cat([h1_pre, h1_pre.new_zeros(MIN_ROWS - r, h1_pre.shape[1])])
    a = F.linear(h1_pre.relu_(), critic.fc2.weight, critic.fc2.bias).relu_()
    q = (a * critic.fc3.weight[0]).sum(-1)[:r] + critic.fc3.bias
    out = getattr(critic, "out", None)  # the critic's output transform (critic_output), if any
    return q if out is None else out(q)


def own_inputs(critic, states: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The scored agent's first-layer input ``[s, u]`` of every row: (..., N, s + a)."""
    return torch.cat([critic._scale(states), u], dim=-1)


def own_part(critic, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The own first-layer part ``W_own x`` of rows x (M, D) -> (M, H1), as a GEMM of at least
    ``MIN_ROWS`` rows, so each row's value does not depend on the rows computed with it (``weight``:
    ``W_own`` given, e.g. one run's slice of a pack's critic)."""
    r = x.shape[0]
    if r < MIN_ROWS:
        x = torch.cat([x, x.new_zeros(MIN_ROWS - r, x.shape[1])])
    w_own = critic.fc1.weight[:, critic.joint_dim :] if weight is None else weight
    return F.linear(x, w_own)[:r]


def rows_h1(
    critic, joint: torch.Tensor, x_own: torch.Tensor, mask: torch.Tensor, own: torch.Tensor | None = None
) -> torch.Tensor:
    """First-layer pre-activations (R, H1) of the rows in ``mask`` (*lead, N), in mask order:
    ``J_b + W_own x_bj``, the own product as a GEMM of at least ``MIN_ROWS`` rows (:func:`own_part`),
    or gathered from ``own`` (*lead, N, H1), the own parts of every row computed so already (the
    same values: the product is row-invariant)."""
    lead = mask.shape[:-1]
    n = mask.shape[-1]
    flat = mask.reshape(-1, n)
    bi, ji = flat.nonzero(as_tuple=True)
    if own is None:
        h = own_part(critic, x_own.reshape(-1, *x_own.shape[-2:])[bi, ji])
    else:
        h = own.reshape(-1, own.shape[-1]).index_select(0, bi * n + ji)
    return h.add_(joint.reshape(lead.numel(), -1).index_select(0, bi))


def hidden_rows(
    own: torch.Tensor,
    own_index: torch.Tensor | None,
    joint: torch.Tensor,
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    chunk: int | None = None,
    own_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The second hidden layer ``relu(W2 relu(own[own_index] + joint[rows]) + b2)`` of M rows, (M,
    H2), no gradient: ``own`` (K, H1) the kept own parts, ``joint`` (B, H1) the joint parts, the
    first layer's pre-activation of row m being ``own[own_index[m]] + joint[rows[m]]``.

    In chunks of ``chunk`` rows (default :data:`CHUNK_ROWS`), each gathered, summed and rectified in
    two preallocated (chunk, H1) buffers that stay in cache, then one GEMM per chunk into the output:
    the same operations, row by row, as gathering every row first (the additions and ReLU are
    elementwise; the GEMM of a chunk gives each row the value it has in the GEMM of all rows when
    both have at least ``MIN_ROWS`` rows, at one torch thread: a last chunk shorter than that is
    merged into the one before, and fewer than ``MIN_ROWS`` rows in all are one chunk). Saves
    writing and re-reading the (M, H1) intermediates, ~4x the size of the output.

    ``own_index`` None: row m's own part is ``own[m]``. ``own_weight`` (H1, D): ``own`` holds the
    rows' own first-layer inputs (K, D) instead, and each chunk's own part is their product with
    it, ``F.linear(own[own_index], own_weight)`` chunk by chunk (row-invariant, as above)."""
    m = rows.shape[0]
    h1 = own.shape[-1] if own_weight is None else own_weight.shape[0]
    chunk = CHUNK_ROWS if chunk is None else chunk
    out = own.new_empty((m, weight.shape[0]))
    starts = list(range(0, m, chunk))
    if len(starts) > 1 and m - starts[-1] < MIN_ROWS:
        starts.pop()
    ends = [*starts[1:], m]
    width = max(e - s for s, e in zip(starts, ends)) if m else 0
    buf, jbuf = own.new_empty((width, h1)), own.new_empty((width, h1))
    wt, ot = weight.t(), None if own_weight is None else own_weight.t()
    for s, e in zip(starts, ends):
        h, hj = buf[: e - s], jbuf[: e - s]
        mine = own[s:e] if own_index is None else None
        if ot is None and mine is None:
            torch.index_select(own, 0, own_index[s:e], out=h)
        elif ot is None:
            h.copy_(mine)
        else:
            torch.mm(own.index_select(0, own_index[s:e]) if mine is None else mine, ot, out=h)
        torch.index_select(joint, 0, rows[s:e], out=hj)
        h.add_(hj).relu_()
        torch.addmm(bias, h, wt, out=out[s:e])
    return out.relu_()


def full_q(
    critic, joint: torch.Tensor, x_own: torch.Tensor, cand: torch.Tensor, own: torch.Tensor | None = None
) -> torch.Tensor:
    """Q (*lead, N) of every candidate row, -inf elsewhere (the full pass); ``own``: as in
    :func:`rows_h1` (with ``own`` on a CPU, the hidden layers in cache-sized chunks,
    :func:`hidden_rows`: the same values as :func:`rowwise_q` of :func:`rows_h1`, bit for bit)."""
    q = torch.full(cand.shape, -torch.inf, device=joint.device)
    n = cand.shape[-1]
    if not cand.any():
        return q
    if own is None or joint.device.type != "cpu" or int(cand.sum()) < MIN_ROWS:  # a GPU: one GEMM
        q[cand] = rowwise_q(critic, rows_h1(critic, joint, x_own, cand, own))
        return q
    bi, ji = cand.reshape(-1, n).nonzero(as_tuple=True)
    a = hidden_rows(
        own.reshape(-1, own.shape[-1]),
        bi * n + ji,
        joint.reshape(-1, joint.shape[-1]),
        bi,
        critic.fc2.weight,
        critic.fc2.bias,
    )
    v = (a * critic.fc3.weight[0]).sum(-1) + critic.fc3.bias
    out = getattr(critic, "out", None)
    q[cand] = v if out is None else out(v)
    return q


def unit_roundoff(device: torch.device) -> float:
    """Unit roundoff of the float32 matmuls on ``device`` at torch's current precision setting."""
    prec = torch.get_float32_matmul_precision()
    if device.type == "cuda" and prec == "highest" and torch.backends.cuda.matmul.allow_tf32:
        prec = "high"
    return UNIT_ROUNDOFF.get(prec, UNIT_ROUNDOFF["medium"])


class BoundedArgmax:
    """The actor loss's candidate scores with provably losing rows skipped, for one training step
    (the critic must not change while it is in use). ``scores(joint, x_own, cand)`` returns (*lead,
    N): the exact Q of every row that can still be its sample's maximum, -inf for every other row,
    so that ``scores(...).max(-1)`` equals the full pass's maximum and argmax."""

    def __init__(self, critic):
        w1 = critic.fc1.weight.detach()
        w2, b2 = critic.fc2.weight.detach(), critic.fc2.bias.detach()
        w3, b3 = critic.fc3.weight.detach()[0], critic.fc3.bias.detach()
        self.critic = critic
        self.c = (w2.abs().t() @ w3.abs()).double()  # (H1,) elementwise Lipschitz weights
        self.w_own = w1[:, critic.joint_dim :].double()
        self.c_own = self.w_own.abs().t() @ self.c  # (D,)
        self.lip2 = float(torch.linalg.vector_norm(w3.double()) * torch.linalg.matrix_norm(w2.double(), 2))
        self.own2 = float(torch.linalg.matrix_norm(self.w_own, 2))
        self.s0 = float(w3.abs().double() @ b2.abs().double() + b3.abs().double().sum())
        n = self.w_own.shape[1] + w1.shape[0] + w2.shape[0] + 3
        u = unit_roundoff(w1.device)
        self.gamma = n * u / (1 - n * u)
        self.finite = bool(torch.isfinite(self.c).all()) and all(
            map(lambda v: v == v and abs(v) != float("inf"), (self.lip2, self.own2, self.s0))
        )
        self.rows = 0  # candidate rows seen, and of them evaluated exactly (over all calls)
        self.evaluated = 0
        self._ref: dict | None = None

    def _margin(self, joint64: torch.Tensor, x64: torch.Tensor) -> torch.Tensor:
        s = (joint64.abs() @ self.c).unsqueeze(-1) + x64.abs() @ self.c_own + self.s0
        return 2 * self.gamma * s

    def scores(
        self,
        joint: torch.Tensor,
        x_own: torch.Tensor,
        cand: torch.Tensor,
        evaluate: Callable[[torch.Tensor], torch.Tensor] | None = None,
        own: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``joint`` (*lead, H1) first-layer joint pre-activations incl. bias, ``x_own`` (*lead, N, D)
        the own inputs of every row, ``cand`` (*lead, N) the candidate rows. ``evaluate(mask)``
        gives the exact Q of the rows in ``mask`` in mask order (default: this critic's
        ``rowwise_q``, with the own parts ``own`` when given, as in :func:`rows_h1`)."""
        if evaluate is None:

            def evaluate(mask: torch.Tensor) -> torch.Tensor:
                return rowwise_q(self.critic, rows_h1(self.critic, joint, x_own, mask, own))

        joint64, x64 = joint.detach().double(), x_own.detach().double()
        margin = self._margin(joint64, x64)
        ref = self._ref
        if ref is None or not self.finite:
            need = cand
        else:
            dj = joint64 - ref["joint"]
            ref["drift1"] += dj.abs() @ self.c
            ref["drift2"] += torch.linalg.vector_norm(dj, dim=-1)
            dx = (x64 - ref["x"]).abs()
            b1 = ref["drift1"].unsqueeze(-1) - ref["d1"] + dx @ self.c_own
            b2 = self.lip2 * (
                ref["drift2"].unsqueeze(-1) - ref["d2"] + self.own2 * torch.linalg.vector_norm(dx, dim=-1)
            )
            bound = torch.minimum(b1, b2) * (1 + BOUND_REL_SLACK) + ref["margin"] + margin
            known = ref["known"] & cand
            lo = torch.where(known, ref["q"] - bound, -torch.inf)
            hi = ref["q"] + bound
            best_lo = lo.max(dim=-1, keepdim=True).values
            need = cand & (~known | (hi >= best_lo))
        q = torch.full(cand.shape, -torch.inf, device=joint.device)
        n_need = int(need.sum())
        if n_need:
            q[need] = evaluate(need)
        self.rows += int(cand.sum())
        self.evaluated += n_need
        if not bool(torch.isfinite(q[need]).all()):  # a diverged critic: no bounds from here on
            self.finite = False
        self._remember(joint64, x64, need, q, margin)
        return q

    def _remember(self, joint64, x64, need, q, margin) -> None:
        if self._ref is None:
            lead = need.shape[:-1]
            z = torch.zeros(need.shape, dtype=torch.float64, device=need.device)
            self._ref = {
                "joint": joint64,
                "drift1": torch.zeros(lead, dtype=torch.float64, device=need.device),
                "drift2": torch.zeros(lead, dtype=torch.float64, device=need.device),
                "x": x64.clone(),
                "q": z.clone(),
                "d1": z.clone(),
                "d2": z.clone(),
                "margin": z.clone(),
                "known": torch.zeros_like(need),
            }
        ref = self._ref
        ref["joint"] = joint64
        m = need.unsqueeze(-1)
        ref["x"] = torch.where(m, x64, ref["x"])
        ref["q"] = torch.where(need, q.double(), ref["q"])
        ref["d1"] = torch.where(need, ref["drift1"].unsqueeze(-1).expand_as(need), ref["d1"])
        ref["d2"] = torch.where(need, ref["drift2"].unsqueeze(-1).expand_as(need), ref["d2"])
        ref["margin"] = torch.where(need, margin, ref["margin"])
        ref["known"] = ref["known"] | need

    @property
    def skipped_fraction(self) -> float:
        return 1.0 - self.evaluated / self.rows if self.rows else 0.0
