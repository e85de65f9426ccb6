"""Where the time of one sequential (published-order) training step goes, by operator.

Trains a default learner (N = 50, batch 64, 10 steps) for a few episodes, then profiles one training
step on a fixed replay batch with ``torch.profiler`` (CPU) and groups the operators' self time into
matmul-type work (mm, addmm, bmm, baddbmm, linear) and the rest. With a source tree that has
``agent.argmax_row_skip``, the step is profiled with the row skipping off and on.

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/profile_sequential_step.py --out DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from ccm_madrl.bench import machine
from ccm_madrl.experiment.config import build_config
from ccm_madrl.experiment.runner import Trainer

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = build_config(
        {
            "agent": {"actor_lr": args.lr},
            "training": {"episodes": args.episodes, "eval_episodes": 0, "tensorboard": False},
            "monitor": {"enabled": False},
        }
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, Path(d) / "run", progress=False, quiet=True)
        tr.run()
    learner = tr.learner
    batch, _, w = learner.replay.sample(64, np.random.default_rng(0))
    state = copy.deepcopy(learner.state_dict())
    modes = [None] if not hasattr(learner, "argmax_row_skip") else [False, True]
    res: dict = {"machine": machine(), "episodes_trained": args.episodes, "actor_lr": args.lr, "modes": {}}
    for skip in modes:
        if skip is not None:
            learner.argmax_row_skip = skip
        ts, cs = [], []
        for _ in range(3):
            learner.load_state_dict(copy.deepcopy(state))
            t, c = time.perf_counter(), time.process_time()
            learner.train_step(batch, w)
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
        learner.load_state_dict(copy.deepcopy(state))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            learner.train_step(batch, w)
        ka = prof.key_averages()
        ops = {e.key: e.self_cpu_time_total / 1e3 for e in ka if e.key.startswith("aten::")}
        total = sum(e.self_cpu_time_total for e in ka) / 1e3
        mm = sum(v for k, v in ops.items() if k in MATMUL)
        name = "default" if skip is None else ("row_skip" if skip else "full_pass")
        (out / f"profile_{name}.txt").write_text(ka.table(sort_by="self_cpu_time_total", row_limit=25))
        res["modes"][name] = {
            "train_step_ms_min_of_3": 1e3 * min(ts),
            "train_step_cpu_ms_min_of_3": 1e3 * min(cs),
            "profiled_self_cpu_ms": total,
            "matmul_self_cpu_ms": mm,
            "matmul_fraction": mm / total,
            "top_ops_self_cpu_ms": dict(sorted(ops.items(), key=lambda kv: -kv[1])[:12]),
        }
    (out / "profile.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: {kk: v[kk] for kk in list(v)[:5]} for k, v in res["modes"].items()}, indent=1))


if __name__ == "__main__":
    main()
