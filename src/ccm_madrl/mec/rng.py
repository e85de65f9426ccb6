"""Random streams of a run, in the two RNG modes.

``reference``
    Reproduces the published implementation: one shared NumPy legacy stream (``RandomState``,
    i.e. NumPy's global stream in the published code) for the environment's construction, the
    training environment's tasks, the exploration noise and the exploration coin, re-seeded by every
    evaluation reset (evaluation episode ``k`` re-seeds it with ``k``); plus one Python
    ``random.Random`` stream for replay sampling and the random exploration subset (the published
    code uses Python's global ``random`` module there, unseeded; here it is seeded with the run seed).
    Consequence (as in the published code): after the first episode, every training episode replays
    nearly the same task sequence and exploration noise.

``independent``
    Separate, properly seeded ``numpy.random.Generator`` streams (PCG64, spawned from one
    ``SeedSequence``) for the training tasks, exploration noise, exploration decisions and replay
    sampling. Evaluation episode ``k`` uses its own stream derived from ``(env_seed, k)``, so every
    run of a study is evaluated on the same fixed task sets.

The environment's constants (device power, gain, battery, compute) are drawn once from
``env_seed`` in both modes: all runs of a study share one MEC system.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

RNG_MODES = ("reference", "independent")

Stream = np.random.RandomState | np.random.Generator
IndexStream = random.Random | np.random.Generator

# Spawn keys of the independent streams (stable: changing them changes every independent run).
_TRAIN_TASKS, _NOISE, _EXPLORE, _REPLAY = 0, 1, 2, 3


def check_rng_mode(mode: str) -> str:
    if mode not in RNG_MODES:
        raise ValueError(f"rng_mode: unknown RNG mode {mode!r}; allowed: {', '.join(RNG_MODES)}")
    return mode


def uniform01(stream: Stream, size: Any) -> np.ndarray:
    """Uniform [0, 1) doubles from either kind of stream."""
    if isinstance(stream, np.random.RandomState):
        return stream.random_sample(size)
    return stream.random(size)


def standard_normal(stream: Stream, size: Any) -> np.ndarray:
    if isinstance(stream, np.random.RandomState):
        return stream.randn(*size) if isinstance(size, tuple) else stream.randn(size)
    return stream.standard_normal(size)


def scalar_uniform01(stream: Stream) -> float:
    if isinstance(stream, np.random.RandomState):
        return float(stream.rand())
    return float(stream.random())


def construction_stream(mode: str, env_seed: int) -> Stream:
    """Stream for the environment's fixed constants (reference: also its task stream)."""
    check_rng_mode(mode)
    if mode == "reference":
        return np.random.RandomState(env_seed)
    return np.random.default_rng(np.random.SeedSequence([int(env_seed), 0xC0]))


def eval_stream(mode: str, env_seed: int, k: int) -> Stream:
    """Stream of evaluation episode ``k`` (published: ``reset(seed=k)`` re-seeds the global stream)."""
    check_rng_mode(mode)
    if mode == "reference":
        return np.random.RandomState(k)
    return np.random.default_rng(np.random.SeedSequence([int(env_seed), 0xE7, int(k)]))


class RunRNG:
    """All random streams of one training run, with state save/restore for checkpoints."""

    def __init__(self, mode: str, seed: int, env_seed: int):
        self.mode = check_rng_mode(mode)
        self.seed = int(seed)
        self.env_seed = int(env_seed)
        if mode == "reference":
            shared = np.random.RandomState(self.env_seed)
            self.tasks: Stream = shared
            self.noise: Stream = shared
            self.explore: Stream = shared
            py = random.Random(self.seed)
            self.explore_subset: IndexStream = py
            self.replay: IndexStream = py
        else:
            children = np.random.SeedSequence(self.seed).spawn(4)
            self.tasks = np.random.default_rng(children[_TRAIN_TASKS])
            self.noise = np.random.default_rng(children[_NOISE])
            self.explore = np.random.default_rng(children[_EXPLORE])
            self.explore_subset = self.explore
            self.replay = np.random.default_rng(children[_REPLAY])

    @property
    def torch_seed(self) -> int:
        return self.seed

    def after_evaluation(self, last_eval_stream_state: Any | None) -> None:
        """Reference mode: evaluation re-seeded the shared stream; continue from where it ended."""
        if self.mode == "reference" and last_eval_stream_state is not None:
            assert isinstance(self.tasks, np.random.RandomState)
            self.tasks.set_state(last_eval_stream_state)

    # ----------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        def st(s: Any) -> Any:
            if isinstance(s, np.random.RandomState):
                return ("RandomState", s.get_state())
            if isinstance(s, np.random.Generator):
                return ("Generator", s.bit_generator.state)
            return ("Random", s.getstate())

        return {
            "mode": self.mode,
            "seed": self.seed,
            "env_seed": self.env_seed,
            "streams": {k: st(getattr(self, k)) for k in self._unique_stream_names()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["mode"] != self.mode:
            raise ValueError(f"checkpoint RNG mode {state['mode']!r} != run RNG mode {self.mode!r}")
        for name, (kind, s) in state["streams"].items():
            obj = getattr(self, name)
            if kind == "RandomState":
                obj.set_state(s)
            elif kind == "Generator":
                obj.bit_generator.state = s
            else:
                obj.setstate(s)

    def _unique_stream_names(self) -> list[str]:
        seen: set[int] = set()
        names = []
        for name in ("tasks", "noise", "explore", "explore_subset", "replay"):
            obj = getattr(self, name)
            if id(obj) not in seen:
                seen.add(id(obj))
                names.append(name)
        return names
