"""Whether two source trees train a short pack to the same per-episode returns: in each tree (a
child process, ``PYTHONPATH`` at its ``src``), a pack of ``--runs`` grid runs (``bench.grid_configs``:
N = 50, 10 steps, sequential order, monitor on or off) trained ``--episodes`` episodes with an
evaluation every episode (``--eval-episodes`` environments); every run's per-episode metrics
(train and evaluation returns, losses) of A and B compared, the largest absolute and relative gap
per column reported (0.0: bit for bit).

    OMP_NUM_THREADS=1 python scripts/ab_pack_returns.py --a BEFORE/src --b AFTER/src --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

COLUMNS = (
    "train_return",
    "eval_return",
    "eval_return_std",
    "eval_constraint_frac",
    "critic_loss",
    "actor_loss",
    "q_mean",
)


def child(runs: int, episodes: int, eval_episodes: int, monitor: bool, out: str) -> None:
    import pandas as pd
    import torch

    from ccm_madrl.bench import grid_configs
    from ccm_madrl.experiment.pack import PackTrainer

    torch.set_num_threads(1)
    training = {"episodes": episodes, "eval_episodes": eval_episodes, "eval_every": 1, "tensorboard": False}
    mon = {"enabled": True, "interval": 2} if monitor else {"enabled": False}
    cfgs = grid_configs(runs, "sequential", training, mon)
    with tempfile.TemporaryDirectory() as d:
        PackTrainer(cfgs, [Path(d) / c.name for c in cfgs]).run()
        res = {
            c.name: pd.read_parquet(Path(d) / c.name / "metrics.parquet")[list(COLUMNS)].to_dict("list")
            for c in cfgs
        }
    Path(out).write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=5)
    ap.add_argument("--a")
    ap.add_argument("--b")
    ap.add_argument("--labels", nargs=2, default=["a", "b"])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--monitor", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        r, e, ev, m, out = args.child
        return child(int(r), int(e), int(ev), m == "1", out)
    got = []
    with tempfile.TemporaryDirectory() as d:
        for i, src in enumerate((args.a, args.b)):
            out = str(Path(d) / f"{i}.json")
            cmd = [sys.executable, __file__, "--child", str(args.runs), str(args.episodes)]
            cmd += [str(args.eval_episodes), str(int(args.monitor)), out]
            subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": src})
            got.append(json.loads(Path(out).read_text()))
    gaps = {}
    for col in COLUMNS:
        pairs = [(x, y) for run in got[0] for x, y in zip(got[0][run][col], got[1][run][col]) if x == x]
        ab = max((abs(x - y) for x, y in pairs), default=0.0)
        rel = max((abs(x - y) / max(abs(x), 1e-30) for x, y in pairs), default=0.0)
        gaps[col] = {"values": len(pairs), "max_abs_gap": ab, "max_rel_gap": rel}
    from ccm_madrl.provenance import collect

    res = {
        "benchmark": "ab_pack_returns",
        "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
        "sources": {"a": {"src": args.a, "label": args.labels[0]}, "b": {"src": args.b, "label": args.labels[1]}},
        "runs": args.runs,
        "episodes": args.episodes,
        "eval_episodes": args.eval_episodes,
        "monitor": args.monitor,
        "gaps": gaps,
        "machine": collect(),
    }
    print(json.dumps(gaps, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
