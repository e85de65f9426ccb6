"""What every benchmark shares: the machine's description, timing and FLOP counting, the matmul
peaks and the profile of the sequential training step."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..experiment.callbacks import Callback
from ..provenance import collect


def machine() -> dict:
    p = collect()
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "version": p["version"],
        "commit": p["commit"],
        "torch": p["torch"],
        "numpy": p["numpy"],
        "python": p["python"],
        **(
            {
                "gpu": torch.cuda.get_device_name(0),
                "cuda": torch.version.cuda,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            }
            if torch.cuda.is_available()
            else {}
        ),
    }


def _timeit(fn, repeat: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {
        "median_ms": 1e3 * statistics.median(ts),
        "p10_ms": 1e3 * float(np.percentile(ts, 10)),
        "p90_ms": 1e3 * float(np.percentile(ts, 90)),
        "repeat": repeat,
    }


def _sync(device: torch.device | str = "cpu") -> None:
    """Wait for the device's queued work (a CUDA device runs asynchronously); nothing on a CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(
    n: int | None = None, repeat: int = 10, clock=time.perf_counter, device: torch.device | str = "cpu"
) -> float:
    """The best of ``repeat`` float32 n x n matmuls, in GFLOP/s of ``clock`` (wall by default;
    ``time.process_time``: CPU time, which other processes sharing the cores do not inflate). On a
    CUDA device: n = 8192 by default, synchronised, in the default float32 mode (no TF32 unless the
    process enabled it; the mode is recorded by :func:`machine`)."""
    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(repeat):
        _sync(dev)
        t = clock()
        a @ b
        _sync(dev)
        ts.append(clock() - t)
    return 2 * n**3 / min(ts) / 1e9


def _agent_header(episodes: int, eval_episodes: int, device: str = "cpu") -> dict:
    return _started(device=device, episodes_per_run=episodes, eval_episodes=eval_episodes)[0]


def _step_flops(step, args: tuple, repeat: int, device: torch.device | str = "cpu") -> tuple[int, float]:
    """FLOPs of one call ``step(*args)`` (matmul-type ops, forward and backward) and its best time
    (synchronised on a CUDA device)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(*args)
    ts = []
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        step(*args)
        _sync(device)
        ts.append(time.perf_counter() - t)
    return fc.get_total_flops(), min(ts)


def ms_medians(steady, **columns: str) -> dict[str, float]:
    """``{key: median of steady[column] in ms}`` for each ``key=column``."""
    return {key: 1e3 * float(steady[col].median()) for key, col in columns.items()}


def step_rates(flops: float, t_step: float, peak: float, gflop_key: str) -> dict[str, float]:
    """A training step's GFLOP (under ``gflop_key``), the GFLOP/s it reaches and its fraction of
    the matmul ``peak``."""
    return {
        gflop_key: flops / 1e9,
        "train_step_gflops_achieved": flops / t_step / 1e9,
        "fraction_of_matmul_peak": flops / t_step / 1e9 / peak,
    }


def _started(device: str = "cpu", **fields) -> tuple[dict, float, float]:
    """A result with the matmul peak in wall time and in process CPU time (a CUDA device: its own
    float32 peak, and the CPU's), ``fields`` and empty ``results``; and the two peaks."""
    peak, peak_cpu = matmul_peak_gflops(device=device), matmul_peak_gflops(clock=time.process_time)
    out = {"matmul_peak_gflops": peak, "matmul_peak_gflops_cpu_time": peak_cpu, **fields, "results": []}
    if torch.device(device).type == "cuda":
        out["device"] = device
        out["device_matmul_peak_gflops_fp32"] = peak
    return out, peak, peak_cpu


class _CpuClock(Callback):
    """A trainer callback: the process CPU time of every episode (robust to other processes sharing
    the cores; the run's metrics hold wall times)."""

    def __init__(self) -> None:
        self.last = time.process_time()
        self.per_episode: list[float] = []

    def on_episode_start(self, trainer, episode: int) -> None:
        self.last = time.process_time()

    def on_episode_end(self, trainer, row: dict) -> bool:
        self.per_episode.append(time.process_time() - self.last)
        return True


def _with(extra: Callback):
    """A trainer's callbacks factory: its default callbacks and ``extra``."""
    from ..experiment.callbacks import default_callbacks

    return lambda trainer: [*default_callbacks(trainer), extra]


def _restoring(learner):
    """A function (skip) -> (wall seconds, process CPU seconds, argmax rows, rows evaluated) of one
    training step on a fixed batch from the learner's current state, restored before every call."""
    import copy

    state = copy.deepcopy(learner.state_dict())
    batch, _, w = learner.replay.sample(learner.batch_size, np.random.default_rng(0))

    def step(skip: bool) -> tuple[float, float, int, int]:
        learner.load_state_dict(copy.deepcopy(state))  # optimiser loads alias their source
        learner.argmax_row_skip = skip
        before = list(learner.argmax_rows)
        t, c = time.perf_counter(), time.process_time()
        learner.train_step(batch, w)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        return dt, dc, learner.argmax_rows[0] - before[0], learner.argmax_rows[1] - before[1]

    return step


def argmax_floor(learner, rows: int, actor_steps: int) -> float:
    """FLOPs of the actor loss's gradient-free maximum: ``rows`` candidate rows (own part, hidden
    and output layer of the critic's head) and the joint first-layer part of every actor step: with
    several actor steps (``offpolicy.ActorSteps``) the state part once and the action part at every
    step, with one the whole joint product once. When each step moves one actor's actions only, the
    rows' own parts are computed once for every (sample, agent) and one agent's column per step, and
    the action part once and then by one agent's columns per step (``ActorSteps.update_joint``)."""
    from ..agents.offpolicy import ActorSteps

    c = learner.critic
    h1, h2 = c.hidden
    own = c.fc1.in_features - c.joint_dim
    head = h1 + 2 * h1 * h2 + 2 * h2
    b = learner.batch_size
    if actor_steps <= 1:
        return rows * (2 * own * h1 + head) + actor_steps * 2 * b * c.joint_dim * h1
    state_cols = c.n_agents * c.state_dim
    action_cols = c.joint_dim - state_cols
    agents = learner.schedule(learner.n_agents, learner.actors.shared)
    if ActorSteps.steps_by_column(learner, agents):
        own_flops = 2 * own * h1 * b * (c.n_agents + actor_steps)
        actions = 2 * b * action_cols * h1 + actor_steps * 2 * b * c.action_dim * h1
    else:
        own_flops = rows * 2 * own * h1
        actions = actor_steps * 2 * b * action_cols * h1
    return rows * head + own_flops + 2 * b * state_cols * h1 + actions


def sequential_step_profile(
    learner, peak_gflops: float, rounds: int = 3, peak_cpu_gflops: float | None = None
) -> dict:
    """The sequential training step on one replay batch with the bounded row skipping off and on
    (alternating, ``rounds`` each, the minimum), its FLOPs and the FLOP floor of the maximum."""
    from torch.utils.flop_counter import FlopCounterMode

    step = _restoring(learner)
    out: dict = {}
    for skip in (False, True):
        with FlopCounterMode(display=False) as fc:
            _, _, rows, evaluated = step(skip)
        out[skip] = {
            "gflop": fc.get_total_flops() / 1e9,
            "rows": rows,
            "evaluated": evaluated,
            "ts": [],
            "cs": [],
        }
    for _ in range(rounds):
        for skip in (False, True):
            t, c, _, _ = step(skip)
            out[skip]["ts"].append(t)
            out[skip]["cs"].append(c)
    n_steps = len(learner.schedule(learner.n_agents, learner.actors.shared))
    floor = argmax_floor(learner, out[False]["rows"], n_steps) / 1e9
    floor_skip = argmax_floor(learner, out[True]["evaluated"], n_steps) / 1e9
    full, skip = min(out[False]["ts"]), min(out[True]["ts"])
    cfull, cskip = min(out[False]["cs"]), min(out[True]["cs"])
    learner.argmax_row_skip = learner.cfg.argmax_row_skip
    cpu_peak = peak_cpu_gflops or peak_gflops
    return {
        "train_step_gflops_cpu_full_pass": out[False]["gflop"] / cfull,
        "train_step_gflops_cpu_row_skip": out[True]["gflop"] / cskip,
        "fraction_of_cpu_matmul_peak_full_pass": out[False]["gflop"] / cfull / cpu_peak,
        "fraction_of_cpu_matmul_peak_row_skip": out[True]["gflop"] / cskip / cpu_peak,
        "argmax_floor_ms_at_cpu_peak": 1e3 * floor / cpu_peak,
        "argmax_floor_ms_at_cpu_peak_row_skip": 1e3 * floor_skip / cpu_peak,
        "train_step_cpu_ms_over_argmax_floor_full_pass": cfull / (floor / cpu_peak),
        "train_step_cpu_ms_over_argmax_floor_row_skip": cskip / (floor_skip / cpu_peak),
        "train_step_ms_full_pass": 1e3 * full,
        "train_step_ms_row_skip": 1e3 * skip,
        "train_step_cpu_ms_full_pass": 1e3 * cfull,
        "train_step_cpu_ms_row_skip": 1e3 * cskip,
        "train_step_gflop_full_pass": out[False]["gflop"],
        "train_step_gflop_row_skip": out[True]["gflop"],
        "argmax_rows": out[False]["rows"],
        "argmax_rows_evaluated_row_skip": out[True]["evaluated"],
        "argmax_floor_gflop": floor,
        "argmax_floor_ms_at_peak": 1e3 * floor / peak_gflops,
        "argmax_floor_gflop_row_skip": floor_skip,
        "argmax_floor_ms_at_peak_row_skip": 1e3 * floor_skip / peak_gflops,
        "full_pass_ms_over_floor_ms": full / (floor / peak_gflops),
    }
