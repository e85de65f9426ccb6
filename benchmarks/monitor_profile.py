"""Where the monitor's time goes in a published-order (sequential update) training run: cProfile of
``ccm_madrl.bench.bench_monitor`` (monitor at interval 2, so measured and unmeasured episodes
alternate), the package's functions by cumulative time. Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/monitor_profile.py 14
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys

import torch


def main() -> None:
    torch.set_num_threads(1)
    from ccm_madrl.bench.monitor import bench_monitor

    episodes = int(sys.argv[1]) if len(sys.argv) > 1 else 14
    pr = cProfile.Profile()
    pr.enable()
    res = bench_monitor(updates=("sequential",), episodes=episodes, eval_episodes=50)
    pr.disable()
    print(json.dumps(res["results"], indent=1))
    pstats.Stats(pr).sort_stats("cumtime").print_stats("monitor|networks|offpolicy|engine|callbacks", 45)


if __name__ == "__main__":
    main()
