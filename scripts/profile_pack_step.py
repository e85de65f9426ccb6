"""Where a packed sequential training step spends its time: ``torch.profiler`` over one step of a
pack of R runs (N = 50, batch 64, the grid's learning rates, after 3 episodes), and the forward +
backward of all R x N actors on a batch alone (what each of the N actor steps recomputes).

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/profile_pack_step.py --runs 16 --out benchmarks/results/pack/quiet_rows/profile_sequential_r16.txt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from ccm_madrl.bench import grid_pack_batch
from ccm_madrl.provenance import collect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    r = args.runs
    pack, batch, w = grid_pack_batch(r)
    n = pack.n_agents
    pack.train_step(batch, w)  # warm-up
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        pack.train_step(batch, w)
    step_s = time.perf_counter() - t0
    states, params = batch["states"], list(pack.actors.parameters())
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        u = pack.actors(states)
        torch.autograd.grad(u.sum(), params)
        ts.append(time.perf_counter() - t)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    lines = [
        f"# scripts/profile_pack_step.py --runs {r}; provenance: {collect()}",
        f"one profiled sequential training step of the pack: {step_s:.3f} s wall (profiler on); "
        f"{n} agents per run, {n} actor steps",
        f"forward + backward of all {r} x {n} actors on the batch ({states.shape[0]} samples): "
        f"best of 5 {1e3 * min(ts):.1f} ms, median {1e3 * float(np.median(ts)):.1f} ms",
        "",
        table,
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:3]))


if __name__ == "__main__":
    main()
