"""The sequential training step with the actors' backward restricted to the stepping actors
(``BatchedActor.gradients_for``, the default) against plain autograd over all R x N actors, timed in
one process: a pack of R runs of the grid (N = 50, batch 64) after 3 episodes, then ``--reps``
rounds, each timing one training step of a fresh copy of the same pack state on the same batch in
both modes (alternating which goes first), so the two modes do the same work apart from the
backward. The end-to-end benchmark (``ccm-madrl bench agent --pack``) varies by up to 14% from run
to run on this machine, more than the difference measured here.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/ab_actor_backward.py --runs 4 16 --out benchmarks/results/pack/grad_rows/ab_actor_backward.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from ccm_madrl.agents import networks
from ccm_madrl.bench import grid_pack_batch
from ccm_madrl.provenance import collect


@contextlib.contextmanager
def _every_actor(self, nets):  # plain autograd: every actor's gradient computed
    yield


def measure(r: int, reps: int) -> dict:
    pack, batch, w = grid_pack_batch(r)
    restricted = networks.BatchedActor.gradients_for
    times: dict[str, list[float]] = {"restricted": [], "autograd": []}
    copy.deepcopy(pack).train_step(batch, w)  # warm-up
    try:
        for rep in range(reps):
            order = ("restricted", "autograd") if rep % 2 == 0 else ("autograd", "restricted")
            for mode in order:
                networks.BatchedActor.gradients_for = restricted if mode == "restricted" else _every_actor
                p = copy.deepcopy(pack)
                t = time.perf_counter()
                p.train_step(batch, w)
                times[mode].append(time.perf_counter() - t)
                del p
    finally:
        networks.BatchedActor.gradients_for = restricted
    med = {m: float(np.median(v)) for m, v in times.items()}
    return {
        "runs_per_pack": r,
        "reps": reps,
        "train_step_s": times,
        "median_s": med,
        "median_ms_per_run": {m: 1e3 * v / r for m, v in med.items()},
        "speedup_median": med["autograd"] / med["restricted"],
        "paired_ratio_median": float(np.median(np.array(times["autograd"]) / np.array(times["restricted"]))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for r in args.runs:
        rows.append(measure(r, args.reps))
        m = rows[-1]
        print(
            f"R = {r}: training step per run, median of {args.reps}: "
            f"autograd {m['median_ms_per_run']['autograd']:.1f} ms, restricted {m['median_ms_per_run']['restricted']:.1f} ms, "
            f"speed-up {m['speedup_median']:.3f}x (median paired ratio {m['paired_ratio_median']:.3f})"
        )
    out = {"benchmark": "ab_actor_backward", "provenance": collect(), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
