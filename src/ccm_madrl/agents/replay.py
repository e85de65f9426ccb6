"""Proportional prioritised replay on a sum tree (the published constants by default).

priority = (|error| + eps) ** alpha; a batch draws one value uniformly from each of ``n`` equal
segments of the total priority; importance weights ``(n_entries * P) ** -beta`` are normalised by
their maximum; beta grows by ``beta_increment`` per sampling call up to 1.

The tree has the published array layout (``2 * capacity - 1`` nodes, leaves at
``capacity - 1 ...``), and updates propagate the *change* up the tree one transition after the
other, as the published tree does, so sums round the same way. Tree walks are compiled (numba);
transitions live in preallocated tensors on the training device.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import numba
import numpy as np
import torch

from ..mec.rng import IndexStream


@numba.njit(cache=True)
def _tree_update(tree, leaves, priorities):  # pragma: no cover - compiled
    for k in range(leaves.shape[0]):
        idx = leaves[k]
        change = priorities[k] - tree[idx]
        tree[idx] = priorities[k]
        while idx != 0:
            idx = (idx - 1) // 2
            tree[idx] += change


@numba.njit(cache=True)
def _tree_retrieve(tree, values):  # pragma: no cover - compiled
    out = np.empty(values.shape[0], dtype=np.int64)
    size = tree.shape[0]
    for k in range(values.shape[0]):
        idx = 0
        s = values[k]
        while True:
            left = 2 * idx + 1
            if left >= size:
                break
            if s <= tree[left]:
                idx = left
            else:
                s -= tree[left]
                idx = left + 1
        out[k] = idx
    return out


class SumTree:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"replay capacity: must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.tree = np.zeros(2 * self.capacity - 1)
        self.write = 0
        self.n_entries = 0

    def total(self) -> float:
        return float(self.tree[0])

    def add(self, priorities: np.ndarray) -> np.ndarray:
        """Append transitions with these priorities; returns their data slots."""
        k = len(priorities)
        slots = (self.write + np.arange(k)) % self.capacity
        _tree_update(self.tree, slots + self.capacity - 1, np.asarray(priorities, dtype=np.float64))
        self.write = int((self.write + k) % self.capacity)
        self.n_entries = min(self.capacity, self.n_entries + k)
        return slots

    def update(self, leaves: np.ndarray, priorities: np.ndarray) -> None:
        _tree_update(self.tree, np.asarray(leaves, dtype=np.int64), np.asarray(priorities, dtype=np.float64))

    def retrieve(self, values: np.ndarray) -> np.ndarray:
        """Leaf (tree) indices for cumulative-priority values."""
        return _tree_retrieve(self.tree, np.asarray(values, dtype=np.float64))


class PrioritizedReplay:
    """Prioritised replay of transitions stored as tensors.

    ``fields`` maps a name to the per-transition shape, e.g. ``{"states": (N, 7), "reward": ()}``.
    """

    def __init__(
        self,
        capacity: int,
        fields: Mapping[str, tuple[int, ...]],
        device: torch.device | str = "cpu",
        alpha: float = 0.6,
        eps: float = 0.01,
        beta0: float = 0.4,
        beta_increment: float = 0.001,
        dtype: torch.dtype = torch.float32,
    ):
        self.tree = SumTree(capacity)
        self.capacity = self.tree.capacity
        self.alpha, self.eps, self.beta, self.beta_increment = alpha, eps, beta0, beta_increment
        self.device = torch.device(device)
        self.data = {
            k: torch.zeros((self.capacity, *shape), dtype=dtype, device=self.device)
            for k, shape in fields.items()
        }

    def __len__(self) -> int:
        return self.tree.n_entries

    def priority(self, errors: np.ndarray) -> np.ndarray:
        errors = np.asarray(errors, dtype=np.float64)
        if not np.isfinite(errors).all():
            bad = errors[~np.isfinite(errors)][0]
            raise FloatingPointError(
                f"priorities: TD error {bad} is not finite: the critic has diverged; try smaller learning "
                "rates or agent.mitigations (critic_grad_clip, input_norm, reward_scale)"
            )
        return (np.abs(errors) + self.eps) ** self.alpha

    def add(self, errors: np.ndarray, **transitions: torch.Tensor) -> None:
        """Append k transitions (in order) with the priorities of their errors."""
        if set(transitions) != set(self.data):
            raise ValueError(f"transitions: expected fields {sorted(self.data)}, got {sorted(transitions)}")
        slots = self.tree.add(self.priority(errors))
        idx = torch.as_tensor(slots, device=self.device)
        for k, v in transitions.items():
            self.data[k][idx] = torch.as_tensor(v, dtype=self.data[k].dtype, device=self.device)

    def sample(self, n: int, stream: IndexStream, retries: int = 3) -> tuple[dict, np.ndarray, np.ndarray]:
        """Draw n transitions. Returns (batch of tensors, leaf indices, importance weights float64).

        As in the published code, a draw that lands on an empty leaf (possible only through rounding
        at the very end of the total) is redrawn, each attempt counting as a sampling call."""
        if len(self) == 0:
            raise RuntimeError("sample: the replay buffer is empty")
        for _ in range(retries + 1):
            self.beta = min(1.0, self.beta + self.beta_increment)
            total = self.tree.total()
            segment = total / n
            lo = segment * np.arange(n)
            hi = segment * (np.arange(n) + 1)
            if isinstance(stream, random.Random):  # reference: Python's random.uniform, one by one
                s = np.array([stream.uniform(a, b) for a, b in zip(lo.tolist(), hi.tolist())])
            else:
                s = stream.uniform(lo, hi)
            leaves = self.tree.retrieve(s)
            slots = leaves - self.capacity + 1
            if (slots < self.tree.n_entries).all() or self.tree.n_entries == self.capacity:
                break
        else:
            raise RuntimeError("sample: repeatedly drew empty replay slots; the sum tree is inconsistent")
        p = self.tree.tree[leaves]
        probs = (p + 1e-9) / (total + 1e-9)
        w = np.power(self.tree.n_entries * probs, -self.beta)
        w /= w.max()
        idx = torch.as_tensor(slots, device=self.device)
        batch = {k: v[idx] for k, v in self.data.items()}
        return batch, leaves, w

    def update(self, leaves: np.ndarray, errors: np.ndarray) -> None:
        self.tree.update(leaves, self.priority(errors))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        n = self.tree.n_entries
        return {
            "tree": self.tree.tree.copy(),
            "write": self.tree.write,
            "n_entries": n,
            "beta": self.beta,
            "data": {k: v[:n].detach().cpu().clone() for k, v in self.data.items()},
        }

    def load_state_dict(self, sd: dict) -> None:
        self.tree.tree[:] = sd["tree"]
        self.tree.write = int(sd["write"])
        self.tree.n_entries = int(sd["n_entries"])
        self.beta = float(sd["beta"])
        for k, v in sd["data"].items():
            self.data[k][: v.shape[0]] = v.to(self.device)
