"""The master's selection of offloading proposals under the server's channel and storage limits,
batched over environments.

Rules (published behaviour):
- agent n proposes to offload when its actor's first output ``u_n[0] >= 0``;
- the limits are exceeded when more than ``limit`` agents propose or their total size exceeds
  ``S_E``; if not exceeded, every proposal is accepted (none if nobody proposes);
- otherwise the master selects: *explore* (training, with probability epsilon) draws ``limit``
  agents uniformly from all agents and removes random members until their total size fits; *greedy*
  ranks the agents with ``u_n[0] > 0`` by Q (descending) and accepts an agent if it proposed, fewer
  than ``limit`` are accepted and the accepted size plus its size stays strictly below ``S_E``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numba
import numpy as np

from ..mec.rng import IndexStream, Stream, scalar_uniform01
from .parts import REJECTED


def proposals_exceed(
    u0: np.ndarray, size: np.ndarray, limit: int, s_e: float
) -> tuple[np.ndarray, np.ndarray]:
    """Proposal mask (E, N) and whether each environment's proposals exceed the limits (E,)."""
    prop = u0 >= 0
    count = prop.sum(axis=-1)
    total = np.where(prop, size, 0.0).sum(axis=-1)
    exceeded = (count > limit) | (total > s_e)
    # The published total is np.sum over the gathered proposers; it can differ from the masked sum
    # in the last bit, which only matters right at the storage bound: recompute those exactly.
    for e in np.flatnonzero(np.abs(total - s_e) <= 1e-9 * s_e):
        exceeded[e] = count[e] > limit or np.sum(size[e][prop[e]]) > s_e
    return prop, exceeded


@numba.njit(cache=True)
def _greedy_accept(order, u0, size, limit, s_e):  # pragma: no cover - compiled
    n_envs, n = order.shape
    sel = np.zeros((n_envs, n))
    for e in range(n_envs):
        count = 0
        accepted = 0.0
        for pos in range(n):
            k = order[e, pos]
            if u0[e, k] >= 0 and count < limit and accepted + size[e, k] < s_e:
                sel[e, k] = 1.0
                count += 1
                accepted += size[e, k]
    return sel


def accept_in_order(
    order: np.ndarray, u0: np.ndarray, size: np.ndarray, limit: int, s_e: float
) -> np.ndarray:
    """Visit agents in ``order`` (E, N) and accept proposals within the limits. Returns 0/1 (E, N)."""
    return _greedy_accept(
        np.ascontiguousarray(order, dtype=np.int64),
        np.ascontiguousarray(u0, dtype=np.float64),
        np.ascontiguousarray(size, dtype=np.float64),
        int(limit),
        float(s_e),
    )


def greedy_select(q: np.ndarray, u0: np.ndarray, size: np.ndarray, limit: int, s_e: float) -> np.ndarray:
    """Q-ranked acceptance. ``q`` (E, N) holds -inf for agents that are not ranked (u0 <= 0).

    The ranking is ``np.argsort(q)[::-1]`` computed by NumPy, as published (ties: reversed)."""
    order = np.argsort(q, axis=-1)[:, ::-1]
    return accept_in_order(order, u0, size, limit, s_e)


def explore_select(size: np.ndarray, limit: int, s_e: float, stream: IndexStream) -> np.ndarray:
    """Random subset for one environment: ``limit`` agents drawn uniformly from all agents, then
    random members removed until their total size is within ``S_E``. Returns 0/1 (N,)."""
    n = size.shape[0]
    k = min(limit, n)
    if isinstance(stream, random.Random):  # the published sequence of Python random calls
        agents = list(range(n))
        stream.shuffle(agents)
        chosen = stream.sample(agents, k)
        while np.sum(size[chosen]) > s_e:
            chosen.remove(stream.choice(chosen))
    else:
        chosen = [int(a) for a in stream.permutation(n)[:k]]
        while np.sum(size[chosen]) > s_e:
            chosen.pop(int(stream.integers(len(chosen))))
    sel = np.zeros(n)
    sel[chosen] = 1.0
    return sel


QFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def master_select(
    u: np.ndarray,
    size: np.ndarray,
    limit: int,
    s_e: float,
    q_fn: QFunction,
    explore: bool = False,
    epsilon: float | np.ndarray = 0.0,
    coin: Stream | list[Stream] | None = None,
    subset: IndexStream | list[IndexStream] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The master's decision for E environments.

    ``u`` (E, N, 3): actor outputs (after exploration noise in training); ``size`` (E, N).
    ``q_fn(envs, candidates)`` returns Q (len(envs), N) for the candidate agents (bool mask) of those
    environments, -inf elsewhere. Returns (selected 0/1 (E, N), exceeded (E,)).
    The exploration coin ``coin`` is drawn once per exceeded environment, in order. ``epsilon``,
    ``coin`` and ``subset`` may also be given per environment (an array, lists): a pack of runs.
    """
    u0 = u[..., 0]
    prop, exceeded = proposals_exceed(u0, size, limit, s_e)
    sel = prop.astype(np.float64)
    envs = np.flatnonzero(exceeded)
    if envs.size == 0:
        return sel, exceeded
    greedy = envs  # greedy (evaluation): every exceeded environment, no draw
    if explore:  # one coin per exceeded environment, in order (the published stream)
        greedy = []
        per_env = isinstance(coin, list)
        for e in envs:
            eps = epsilon[e] if np.ndim(epsilon) else epsilon
            if scalar_uniform01(coin[e] if per_env else coin) <= eps:
                sel[e] = explore_select(size[e], limit, s_e, subset[e] if per_env else subset)
            else:
                greedy.append(e)
    if len(greedy):
        g = np.asarray(greedy)
        q = q_fn(g, u0[g] > 0)
        sel[g] = greedy_select(q, u0[g], size[g], limit, s_e)
    return sel, exceeded


# ----------------------------------------------------------------------------- benchmarks


def _offload_time(states: np.ndarray, u: np.ndarray, cfg) -> np.ndarray:
    from ..mec.dynamics import offload_time, scale_fraction

    return offload_time(cfg, states[..., 0], states[..., 1], states[..., 3], scale_fraction(u[..., 2]))


# a heuristic-selection MADDPG's name -> the key whose ascending order visits its proposals:
# offloadtimefirst: shortest transmission time at the actor's power action first (from each state's
# own power, gain and size); deadline_divide2_size_first: smallest deadline / size first;
# min/maxdeadlinefirst, min/maxsizefirst: by deadline (state 5) or size (state 3), ascending or
# descending. Each name is a learner of agents.LEARNERS.
HEURISTIC_ORDERS: dict[str, Callable[[np.ndarray, np.ndarray, object], np.ndarray]] = {
    "offloadtimefirst": _offload_time,
    "deadline_divide2_size_first": lambda s, u, cfg: s[..., 5] / s[..., 3],
    "mindeadlinefirst": lambda s, u, cfg: s[..., 5],
    "maxdeadlinefirst": lambda s, u, cfg: -s[..., 5],
    "minsizefirst": lambda s, u, cfg: s[..., 3],
    "maxsizefirst": lambda s, u, cfg: -s[..., 3],
}


def heuristic_order(kind: str, states: np.ndarray, u: np.ndarray, cfg) -> np.ndarray:
    """Visiting order (E, N) of the fixed heuristic ``kind`` (``HEURISTIC_ORDERS``)."""
    if kind not in HEURISTIC_ORDERS:
        raise ValueError(f"heuristic: unknown order {kind!r}; allowed: {', '.join(HEURISTIC_ORDERS)}")
    return np.argsort(HEURISTIC_ORDERS[kind](states, u, cfg), axis=-1)


def heuristic_select(
    states: np.ndarray, u: np.ndarray, kind: str, limit: int, s_e: float, cfg, rejected: str = "punish"
) -> tuple[np.ndarray, np.ndarray]:
    """Benchmark selection: when the limits are exceeded, proposals are visited in a fixed order and
    accepted within the limits; the other proposers are punished (x = 2, published) or compute
    locally (``rejected="local"``). Returns (x (E, N) in {0, 1, 2}, exceeded (E,))."""
    if rejected not in REJECTED:
        raise ValueError(f"rejected: must be one of {', '.join(REJECTED)}, got {rejected!r}")
    u0, size = u[..., 0], states[..., 3]
    prop, exceeded = proposals_exceed(u0, size, limit, s_e)
    x = prop.astype(np.float64)
    envs = np.flatnonzero(exceeded)
    if envs.size:
        order = heuristic_order(kind, states[envs], u[envs], cfg)
        acc = accept_in_order(order, u0[envs], size[envs], limit, s_e)
        x[envs] = acc + REJECTED[rejected] * (prop[envs] & (acc == 0))
    return x, exceeded
