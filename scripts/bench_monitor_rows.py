"""The monitor's end-of-episode bookkeeping in a pack of 160 runs (8,160 per-agent rows per episode):
seconds per call of ``GradientFlowMonitor.end_episode``, on this machine's CPU (tiny networks, so
that the row building, not the arithmetic, is what is timed).

Run: PYTHONPATH=src python scripts/bench_monitor_rows.py [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from ccm_madrl.experiment import build_config
from ccm_madrl.experiment.pack import PackTrainer
from ccm_madrl.monitor.core import GradientFlowMonitor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=160)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfgs = [
        build_config(
            {
                "name": f"r{i}",
                "seed": i,
                "agent": {"critic_hidden": [8, 8], "actor_hidden": [8, 8]},
                "env": {"max_steps": 2},
                "training": {
                    "episodes": 5,
                    "eval_episodes": 1,
                    "tensorboard": False,
                    "checkpoint_every": 10**6,
                },
                "monitor": {"enabled": True, "interval": 1},
            }
        )
        for i in range(a.runs)
    ]
    times: list[float] = []
    orig = GradientFlowMonitor.end_episode

    def timed(self, *args, **kw):
        t = time.perf_counter()
        out = orig(self, *args, **kw)
        times.append(time.perf_counter() - t)
        return out

    GradientFlowMonitor.end_episode = timed
    with tempfile.TemporaryDirectory() as d:
        PackTrainer(cfgs, [Path(d) / c.name for c in cfgs]).run()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    res = {
        "runs": a.runs,
        "rows_per_episode": a.runs * 51,
        "end_episode_s": times,
        "end_episode_s_median_trained": statistics.median(times[1:]),
        "commit": commit,
        "command": "PYTHONPATH=src python scripts/bench_monitor_rows.py",
    }
    print(json.dumps(res))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
