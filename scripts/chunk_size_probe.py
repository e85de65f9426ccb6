"""The packed sequential training step's CPU time by the chunk size of the candidate rows' hidden
layers (``argmax.CHUNK_ROWS``; one chunk per run = the largest), a pack of ``--runs`` grid runs
(``bench.grid_pack_batch``), ``--rounds`` rounds over the sizes, one torch thread; and the CPU-time
rate of that chunk's GEMM (256 x 512 by 512 x 128, with bias) beside a 2048 x 2048 matmul.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/chunk_size_probe.py --out benchmarks/results/sequential/floor/chunk_sizes.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

import ccm_madrl.agents.argmax as am
from ccm_madrl.bench import grid_pack_batch
from ccm_madrl.provenance import collect


def gemm_rate(m: int, k: int, n: int, reps: int) -> float:
    w, b, x = torch.randn(n, k), torch.randn(n), torch.randn(m, k)
    out = torch.empty(m, n)
    for _ in range(3):
        torch.addmm(b, x, w.t(), out=out)
    t = time.process_time()
    for _ in range(reps):
        torch.addmm(b, x, w.t(), out=out)
    return 2 * m * k * n * reps / (time.process_time() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1_000_000])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pack, batch, w = grid_pack_batch(args.runs)
    copy.deepcopy(pack).train_step(batch, w)
    ms: dict[int, list[float]] = {c: [] for c in args.sizes}
    for _ in range(args.rounds):
        for c in args.sizes:
            am.CHUNK_ROWS = c
            lr = copy.deepcopy(pack)
            t = time.process_time()
            lr.train_step(batch, w)
            ms[c].append(1e3 * (time.process_time() - t) / args.runs)
    a = torch.randn(2048, 2048)
    a @ a
    t = time.process_time()
    for _ in range(3):
        a @ a
    peak = 3 * 2 * 2048**3 / (time.process_time() - t) / 1e9
    res = {
        "benchmark": "chunk_size_probe",
        "command": " ".join(["OMP_NUM_THREADS=1", "python", *sys.argv]),
        "provenance": collect(),
        "load": f"load average at the end: {os.getloadavg()}",
        "cpu_ms_per_run_and_step": {str(c): v for c, v in ms.items()},
        "gemm_256x512x128_cpu_gflops": gemm_rate(256, 512, 128, 200),
        "matmul_2048_cpu_gflops": peak,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    for c, v in ms.items():
        print(c, [round(x, 1) for x in v])
    print("gemm", round(res["gemm_256x512x128_cpu_gflops"], 1), "peak", round(peak, 1))


if __name__ == "__main__":
    main()
