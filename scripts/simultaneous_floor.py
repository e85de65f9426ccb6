"""The matmul floor of one run-episode in the simultaneous order at the benchmark's setting (N = 50,
10 steps, batch 64, 50 evaluation episodes): the FLOPs of the evaluation (50 episodes), of acting
(one episode with exploration) and of one training step, counted by ``FlopCounterMode`` on a run
after ``--episodes`` episodes, and the time they take at the matmul peak measured in the same run.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/simultaneous_floor.py --out benchmarks/results/pack/simultaneous_floor.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ccm_madrl.bench import matmul_peak_gflops
from ccm_madrl.experiment.config import build_config
from ccm_madrl.experiment.pack import PackTrainer
from ccm_madrl.provenance import collect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=8, help="episodes trained before counting (default 8)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = build_config(
        {
            "name": "r0",
            "threads": 1,
            "env": {"max_steps": 10},
            "agent": {"actor_update": "simultaneous"},
            "training": {"episodes": args.episodes, "eval_episodes": 50, "tensorboard": False},
            "monitor": {"enabled": False},
        }
    )
    with tempfile.TemporaryDirectory() as d:
        tr = PackTrainer([cfg], [Path(d) / "r0"])
        tr.run()
        pack = tr.pack
        gflop = {}
        with FlopCounterMode(display=False) as fc:
            tr.evaluate()
        gflop["evaluation"] = fc.get_total_flops() / 1e9
        state = tr.env.reset()
        with FlopCounterMode(display=False) as fc:
            for _ in range(cfg.env.max_steps):
                act = pack.act(
                    state, explore=True, epsilon=pack.epsilon(args.episodes, cfg.training.episodes)
                )
                state, *_ = tr.env.step(act.hybrid)
        gflop["acting"] = fc.get_total_flops() / 1e9
        b, _, w = pack.runs[0].replay.sample(64, np.random.default_rng(0))
        with FlopCounterMode(display=False) as fc:
            pack.train_step(b, w)
        gflop["training_step"] = fc.get_total_flops() / 1e9
    peak = matmul_peak_gflops()
    total = sum(gflop.values())
    out = {
        "command": "scripts/simultaneous_floor.py",
        "episodes_trained": args.episodes,
        "gflop": gflop,
        "gflop_total": total,
        "matmul_peak_gflops": peak,
        "floor_ms": {k: 1e3 * v / peak for k, v in gflop.items()},
        "floor_ms_total": 1e3 * total / peak,
        "provenance": collect(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("gflop", "floor_ms", "floor_ms_total")}, indent=2))


if __name__ == "__main__":
    main()
