"""Where a packed sequential training step spends its time: ``torch.profiler`` over one step of a
pack of R runs (N = 50, batch 64, the grid's learning rates, after 3 episodes), the forward +
backward of all R x N actors on a batch alone (what each of the N actor steps recomputed when the
monitor forced the full forward), and process CPU times (one torch thread) of: a step without the
monitor, a step with the gradient-flow monitor attached and measuring, and one greedy acting step
of R x 50 evaluation environments (``act``: the actors, the master's selection with the critic).

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/profile_pack_step.py --runs 16 --out benchmarks/results/pack/quiet_rows/profile_sequential_r16.txt
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from ccm_madrl.bench import grid_pack_batch
from ccm_madrl.monitor.core import GradientFlowMonitor
from ccm_madrl.provenance import collect


def _fresh(pack, monitored: bool):
    """A copy of the pack's state (a training step changes it), measuring with a monitor if asked."""
    p = copy.deepcopy(pack)
    if monitored:
        mon = GradientFlowMonitor()
        p.attach_monitor(mon)
        mon.start_episode(0)
    return p


def _cpu_ms(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        c = time.process_time()
        fn()
        out.append(1e3 * (time.process_time() - c))
    return out


def _timings(pack, batch, w, reps: int) -> list[str]:
    """Process CPU times of a step without / with the monitor (alternated) and of an acting step."""
    r = pack.n_runs
    plain, monitored = [], []
    for _ in range(reps):
        for flag, acc in ((False, plain), (True, monitored)):
            p = _fresh(pack, flag)
            acc += _cpu_ms(lambda p=p: p.train_step(batch, w), 1)
    per = batch["states"].shape[0] // r
    states = batch["states"].reshape(r, per, *batch["states"].shape[1:])[:, : min(per, 50)]
    states = states.reshape(-1, *states.shape[2:]).double().numpy()
    pack.act(states)  # warm-up
    act = _cpu_ms(lambda: pack.act(states), 2 * reps + 1)
    med = lambda xs: float(np.median(xs))  # noqa: E731
    return [
        f"training step, CPU ms per run (median of {reps}, alternated): monitor off "
        f"{med(plain) / r:.1f}, monitor on (attached, measuring) {med(monitored) / r:.1f}; "
        f"all: off {[round(x / r, 1) for x in plain]}, on {[round(x / r, 1) for x in monitored]}",
        f"one greedy acting step of {states.shape[0]} environments, CPU ms (median of {len(act)}): "
        f"{med(act):.1f} ({med(act) / r:.2f} per run; an evaluation is 50 environments x 10 such steps "
        "per run)",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3, help="repeats of the CPU-time measurements")
    ap.add_argument("--monitor", action="store_true", help="profile the step with the monitor on")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    r = args.runs
    pack, batch, w = grid_pack_batch(r)
    n = pack.n_agents
    _fresh(pack, args.monitor).train_step(batch, w)  # warm-up
    p = _fresh(pack, args.monitor)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        p.train_step(batch, w)
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
        f"# scripts/profile_pack_step.py --runs {r} --reps {args.reps}"
        f"{' --monitor' if args.monitor else ''}; provenance: {collect()}",
        f"one profiled sequential training step of the pack (monitor {'on' if args.monitor else 'off'}): "
        f"{step_s:.3f} s wall (profiler on); {n} agents per run, {n} actor steps",
        f"forward + backward of all {r} x {n} actors on the batch ({states.shape[0]} samples): "
        f"best of 5 {1e3 * min(ts):.1f} ms, median {1e3 * float(np.median(ts)):.1f} ms",
        *_timings(pack, batch, w, args.reps),
        "",
        table,
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:5]))


if __name__ == "__main__":
    main()
