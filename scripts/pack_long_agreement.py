"""Packed runs over long training: where a run in a pack first parts from the same run alone
(floating-point summation order), and whether the final-return distributions agree.

R runs (CELLS x SEEDS: the same config per cell, seeds 0..S-1) are trained as one pack and each
alone, one torch thread, published sequential order, reference RNG mode; per run the first episode
whose evaluation return differs by more than 1e-6 relative, and per cell the final returns (mean of
the last 10 evaluations) of the packed and the lone runs compared with rliable's IQM and probability
of improvement (Mann-Whitney p) and a paired difference.

Run: PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/pack_long_agreement.py --out benchmarks/results/pack/long_agreement.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.experiment.pack import PackTrainer
from ccm_madrl.report import stats
from ccm_madrl.rundir import final_return

CELLS = [(1e-3, 1e-3), (1e-2, 1e-3)]  # (actor lr, critic lr)


def config(actor_lr: float, critic_lr: float, seed: int, episodes: int, n_agents: int) -> object:
    return build_config(
        {
            "name": f"a{actor_lr:g}_c{critic_lr:g}_s{seed}",
            "seed": seed,
            "env": {"n_agents": n_agents, "max_steps": 10},
            "agent": {
                "actor_update": "sequential",
                "actor_lr": actor_lr,
                "critic_lr": critic_lr,
                "batch_size": 32,
                "critic_hidden": [128, 64],
            },
            "training": {
                "episodes": episodes,
                "eval_episodes": 10,
                "tensorboard": False,
                "checkpoint_every": 10**6,
            },
            "monitor": {"enabled": False},
        }
    )


def first_divergence(a: np.ndarray, b: np.ndarray, tol: float = 1e-6) -> int | None:
    ok = ~(np.isnan(a) | np.isnan(b))
    rel = np.where(ok, np.abs(a - b) / np.maximum(np.abs(a), 1e-30), 0.0)
    bad = np.flatnonzero(rel > tol)
    return int(bad[0]) if len(bad) else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--agents", type=int, default=12)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    cfgs = [config(x, y, s, a.episodes, a.agents) for x, y in CELLS for s in range(a.seeds)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        PackTrainer(cfgs, [d / "pack" / c.name for c in cfgs]).run()
        t_pack = time.perf_counter() - t0
        for c in cfgs:
            Trainer(c, d / "alone" / c.name, progress=False, quiet=True).run()
        t_alone = time.perf_counter() - t0 - t_pack
        runs = []
        for c in cfgs:
            p = pd.read_parquet(d / "pack" / c.name / "metrics.parquet")
            s = pd.read_parquet(d / "alone" / c.name / "metrics.parquet")
            runs.append(
                {
                    "run": c.name,
                    "actor_lr": c.agent.actor_lr,
                    "critic_lr": c.agent.critic_lr,
                    "seed": c.seed,
                    "first_eval_divergence_episode": first_divergence(
                        s["eval_return"].to_numpy(), p["eval_return"].to_numpy()
                    ),
                    "same_exceeded_steps_episodes": int(
                        (s["eval_constraint_frac"].fillna(-1) == p["eval_constraint_frac"].fillna(-1)).sum()
                    ),
                    "final_return_pack": final_return(p),
                    "final_return_alone": final_return(s),
                }
            )
    cells = []
    for x, y in CELLS:
        r = [row for row in runs if row["actor_lr"] == x and row["critic_lr"] == y]
        fp = np.array([row["final_return_pack"] for row in r])
        fa = np.array([row["final_return_alone"] for row in r])
        cells.append(
            {
                "actor_lr": x,
                "critic_lr": y,
                "n": len(r),
                "iqm_pack": stats.iqm_ci(fp),
                "iqm_alone": stats.iqm_ci(fa),
                "pack_beats_alone": stats.probability_of_improvement(fp, fa),
                "paired_diff_mean": float(np.mean(fp - fa)),
                "paired_diff_max_abs": float(np.max(np.abs(fp - fa))),
                "runs_identical_to_1e-6": int(sum(row["first_eval_divergence_episode"] is None for row in r)),
            }
        )
    res = {
        "episodes": a.episodes,
        "seeds": a.seeds,
        "n_agents": a.agents,
        "update": "sequential",
        "rng_mode": "reference",
        "torch_threads": 1,
        "wall_s_pack": t_pack,
        "wall_s_alone": t_alone,
        "commit": commit,
        "command": "PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/pack_long_agreement.py",
        "cells": cells,
        "runs": runs,
    }
    text = json.dumps(res, indent=2, default=float)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
