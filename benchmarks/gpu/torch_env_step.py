"""One batched MEC step for E environments: the NumPy/numba env (mec/env.py) against the torch env
(mec/torch_env.py) on DEVICE, float64, alternated A/B, medians.

A timed episode is a reset and MAX_STEPS steps (the NumPy env draws each step's tasks as it steps; the
torch env draws the episode's block at the reset and copies it once); the figure is its time divided
by MAX_STEPS. Action profiles: ``master`` (at most the selection limit, 10, offload per environment:
what the master's selection produces; torch queue_bound = 10, a static loop) and ``random`` (x
uniform over {0, 1, 2}: ~1/3 offload and ~1/3 are punished, the H2 queue's worst case; torch
queue_bound "batch" and None). The actions are made beforehand (on DEVICE for the torch env).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/gpu/torch_env_step.py [--device cuda]
     [--envs 8000] [--repeats 5] [--out benchmarks/results/device/torch_env_cpu.json]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ccm_madrl import jsonio
from ccm_madrl.bench import machine
from ccm_madrl.mec import MECConfig, MECEnv, TorchMECEnv
from ccm_madrl.provenance import source_commit


def actions(profile: str, e: int, n: int, steps: int, limit: int, seed: int = 0) -> list[np.ndarray]:
    rs = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        if profile == "random":
            x = rs.integers(0, 3, (e, n)).astype(float)
        else:
            x = (rs.random((e, n)).argsort(axis=1) < limit).astype(float)  # `limit` agents per env
        out.append(np.stack([x, rs.uniform(0.01, 1, (e, n)), rs.uniform(0.01, 1, (e, n))], axis=-1))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def numpy_episode(env: MECEnv, acts: list) -> float:
    t0 = time.perf_counter()
    env.reset()
    for a in acts:
        env.step(a)
    return (time.perf_counter() - t0) / len(acts)


def torch_episode(env: TorchMECEnv, acts: list) -> float:
    _sync(env.device)
    t0 = time.perf_counter()
    env.reset()
    for a in acts:
        env.step(a)
    _sync(env.device)
    return (time.perf_counter() - t0) / len(acts)


def bench_profile(cfg: MECConfig, profile: str, e: int, device: torch.device, repeats: int) -> dict:
    acts = actions(profile, e, cfg.n_agents, cfg.max_steps, cfg.selection_limit)
    dev_acts = [torch.from_numpy(a).to(device)[None] for a in acts]
    bounds = {"master": [cfg.selection_limit], "random": ["batch", None]}[profile]
    if device.type != "cpu":
        bounds = [b for b in bounds if b != "batch"] or bounds  # "batch" reads the device each step
    np_env = MECEnv(cfg, e)
    t_envs = {str(b): TorchMECEnv(cfg, 1, e, device=device, queue_bound=b) for b in bounds}
    numpy_episode(np_env, acts)  # warm-up (numba compiled, caches)
    for env in t_envs.values():
        torch_episode(env, dev_acts)
    times: dict[str, list[float]] = {"numpy": [], **{f"torch_bound_{k}": [] for k in t_envs}}
    for _ in range(repeats):  # alternate A/B: the machine's load varies
        times["numpy"].append(numpy_episode(np_env, acts))
        for k, env in t_envs.items():
            times[f"torch_bound_{k}"].append(torch_episode(env, dev_acts))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "profile": profile,
        "step_ms_median": med,
        "step_ms_all": {k: [x * 1e3 for x in v] for k, v in times.items()},
        "speedup_vs_numpy": {k: med["numpy"] / v for k, v in med.items() if k != "numpy"},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--envs", type=int, default=8000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profiles", default="master,random")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/device/torch_env_cpu.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cfg = MECConfig()  # the study's environment: H2, 50 agents, 10 steps
    res = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1min_at_start": os.getloadavg()[0],
        "machine": machine(),
        "commit": source_commit(),
        "device": str(device),
        "envs": args.envs,
        "n_agents": cfg.n_agents,
        "mode": cfg.mode,
        "dtype": "float64",
        "what": "ms per batched step (an episode: reset + max_steps steps, / max_steps), median of repeats",
        "results": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for profile in args.profiles.split(","):
        res["results"].append(bench_profile(cfg, profile, args.envs, device, args.repeats))
        args.out.write_text(jsonio.dumps(res))  # what is done so far survives a timeout
        print(jsonio.dumps(res["results"][-1]["step_ms_median"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
