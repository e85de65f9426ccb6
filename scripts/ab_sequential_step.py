"""A/B timing of the sequential (published-order) training step between two source trees, interleaved.

One child process per source tree (``PYTHONPATH`` at its ``src``), both alive for the whole
measurement: each builds the same learner (``single``: one default run, N = 50, batch 64, 10 steps,
trained ``--episodes`` episodes; ``pack R``: ``bench.grid_pack_batch(R)``; ``pack Rm``: the same with the gradient-flow monitor
attached and measuring, as in a monitored episode; ``act R``: one greedy acting step of R x 50
environments instead of a training step) and one replay batch, then
times one training step on a fresh copy of that state each time the parent asks. The parent asks
A, B, B, A, A, B, ... (``--reps`` rounds), so both trees see the same load over time; it reports
per-step process CPU time and wall time, their medians, the ratio of medians and the median of the
paired ratios (A / B), and the FLOPs of one step in each tree (``FlopCounterMode``).

    OMP_NUM_THREADS=1 python scripts/ab_sequential_step.py --a BEFORE/src --b AFTER/src \\
        --setups single pack16 --reps 9 --out benchmarks/results/sequential/ab_floor.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def child(setup: str, episodes: int) -> None:  # runs in the tree named by PYTHONPATH
    import tempfile

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    if setup == "single":
        from ccm_madrl.experiment.config import build_config
        from ccm_madrl.experiment.runner import Trainer

        cfg = build_config(
            {
                "training": {"episodes": episodes, "eval_episodes": 0, "tensorboard": False},
                "monitor": {"enabled": False},
            }
        )
        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(cfg, Path(d) / "run", progress=False, quiet=True)
            tr.run()
        learner = tr.learner
        batch, _, w = learner.replay.sample(64, np.random.default_rng(0))
    else:
        from ccm_madrl.bench import grid_pack_batch

        learner, batch, w = grid_pack_batch(
            int(setup.removeprefix("pack").removeprefix("act").removesuffix("m"))
        )
    if setup.startswith("act"):
        return act_child(learner, batch)
    monitored = setup.endswith("m")

    def fresh():
        """A copy of the learner's state, with a monitor attached and measuring (``pack16m``)."""
        lr = copy.deepcopy(learner)
        if monitored:
            from ccm_madrl.monitor.core import GradientFlowMonitor

            mon = GradientFlowMonitor()
            lr.attach_monitor(mon)
            mon.start_episode(0)
        return lr

    fresh().train_step(batch, w)  # warm-up
    with FlopCounterMode(display=False) as fc:
        fresh().train_step(batch, w)
    print(json.dumps({"ready": True, "flops": fc.get_total_flops()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        lr = fresh()
        t, c = time.perf_counter(), time.process_time()
        lr.train_step(batch, w)
        print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c}), flush=True)
        del lr


def act_child(pack, batch) -> None:
    """``act R``: one greedy acting step of R x 50 evaluation environments per request (the states
    of the replay batch's first 50 samples of each run), as ``step`` replies."""
    r = pack.n_runs
    per = batch["states"].shape[0] // r
    states = batch["states"].reshape(r, per, *batch["states"].shape[1:])[:, : min(per, 50)]
    states = states.reshape(-1, *states.shape[2:]).double().numpy()
    pack.act(states)  # warm-up
    print(json.dumps({"ready": True, "flops": 0}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t, c = time.perf_counter(), time.process_time()
        pack.act(states)
        print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c}), flush=True)


def measure(srcs: dict[str, str], setup: str, reps: int, episodes: int) -> dict:
    procs = {}
    for name, src in srcs.items():
        env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
        procs[name] = subprocess.Popen(
            [sys.executable, __file__, "--child", setup, "--episodes", str(episodes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
    flops = {}
    for name, p in procs.items():
        while True:
            msg = json.loads(p.stdout.readline())
            if msg.get("ready"):
                flops[name] = msg["flops"]
                break
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in srcs}
    order = list(srcs)
    for rep in range(reps):
        for name in order if rep % 2 == 0 else order[::-1]:
            p = procs[name]
            p.stdin.write("step\n")
            p.stdin.flush()
            msg = json.loads(p.stdout.readline())
            for k in ("wall", "cpu"):
                times[name][k].append(msg[k])
    for p in procs.values():
        p.stdin.close()
        p.wait()
    a, b = order
    out = {"setup": setup, "reps": reps, "flops_per_step": flops, "step_s": times}
    for k in ("cpu", "wall"):
        med = {n: float(np.median(times[n][k])) for n in srcs}
        out[f"median_{k}_ms"] = {n: 1e3 * v for n, v in med.items()}
        out[f"ratio_of_medians_{k}"] = med[a] / med[b]
        out[f"median_paired_ratio_{k}"] = float(np.median(np.array(times[a][k]) / np.array(times[b][k])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child")
    ap.add_argument("--a", help="source tree A (the 'before'), its src directory")
    ap.add_argument("--b", help="source tree B (the 'after'), its src directory")
    ap.add_argument("--setups", nargs="+", default=["single", "pack16"])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--labels", nargs=2, default=["a", "b"], help="what A and B are (e.g. their commits)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.episodes)
    srcs = {"a": str(Path(args.a).resolve()), "b": str(Path(args.b).resolve())}
    rows = []
    for setup in args.setups:
        rows.append(measure(srcs, setup, args.reps, args.episodes))
        m = rows[-1]
        print(
            f"{setup}: CPU ms per step, median of {args.reps}: A {m['median_cpu_ms']['a']:.1f}, "
            f"B {m['median_cpu_ms']['b']:.1f}, A/B {m['ratio_of_medians_cpu']:.3f} (paired median "
            f"{m['median_paired_ratio_cpu']:.3f}); wall A/B {m['ratio_of_medians_wall']:.3f}; GFLOP A "
            f"{m['flops_per_step']['a'] / 1e9:.2f}, B {m['flops_per_step']['b'] / 1e9:.2f}",
            flush=True,
        )
    if args.out:
        sys.path.insert(0, srcs["b"])
        from ccm_madrl.bench import machine

        res = {
            "benchmark": "ab_sequential_step",
            "command": " ".join(["OMP_NUM_THREADS=1", "python", *sys.argv]),
            "sources": {
                "a": {"src": srcs["a"], "label": args.labels[0]},
                "b": {"src": srcs["b"], "label": args.labels[1]},
            },
            "machine": machine(),
            "load": f"measured under background load (load average at the end: {os.getloadavg()})",
            "results": rows,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
