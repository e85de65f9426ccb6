"""Pack of R runs on the CPU: the device-resident path against today's host path (informative).

R runs (seeds 0..R-1, published sizes: 50 agents, 10 steps; ``--eval`` evaluation episodes, monitor
on, no TensorBoard) for ``--episodes`` episodes on each path, alternately; the median wall time of a
pack episode after the first two (replay filling, compilation) and the device path's passes.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/gpu/device_vs_host_cpu.py --out FILE
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ccm_madrl import jsonio
from ccm_madrl.bench import machine
from ccm_madrl.experiment import build_config
from ccm_madrl.experiment.pack import PackTrainer


def one(path: str, runs: int, episodes: int, n_eval: int) -> dict:
    cfgs = [
        build_config({"seed": s, "name": f"r{s}", "device": "cpu",
                      "training": {"episodes": episodes, "eval_episodes": n_eval, "tensorboard": False,
                                   "device_resident": path}})  # fmt: skip
        for s in range(runs)
    ]
    stamps: list[float] = []
    orig = PackTrainer.episode

    def timed(self, ep):
        stamps.append(time.perf_counter())
        return orig(self, ep)

    PackTrainer.episode = timed
    try:
        with tempfile.TemporaryDirectory() as d:
            tr = PackTrainer(cfgs, [Path(d) / c.name for c in cfgs])
            tr.run()
            stamps.append(time.perf_counter())
    finally:
        PackTrainer.episode = orig
    it = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"pack_episode_s": it, "median_s": statistics.median(it[2:]),
            "passes": tr._device.passes if tr._device else None}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--episodes", type=int, default=6)
    p.add_argument("--eval", type=int, default=10)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    res = {"machine": machine(), "runs": a.runs, "episodes": a.episodes, "eval_episodes": a.eval}
    for path in ("off", "on", "off", "on"):
        res.setdefault(path, []).append(one(path, a.runs, a.episodes, a.eval))
        Path(a.out).write_text(jsonio.dumps(res))
    for path in ("off", "on"):
        res[f"{path}_median_s"] = statistics.median([x["median_s"] for x in res[path]])
    res["device_over_host"] = res["on_median_s"] / res["off_median_s"]
    Path(a.out).write_text(jsonio.dumps(res))
    print({k: v for k, v in res.items() if k.endswith("_s") or k == "device_over_host"})


if __name__ == "__main__":
    main()
