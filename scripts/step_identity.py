"""Whether two source trees train bit for bit alike: in each tree (a child process, ``PYTHONPATH``
at its ``src``), a default run (N = 50, batch 64, 10 steps) trained ``--episodes`` episodes and a
pack of ``--runs`` grid runs (``bench.grid_pack_batch``), then two training steps on one replay
batch; every network tensor (actors, critic, their targets) of A and B compared with
``torch.equal``, and the steps' statistics.

    OMP_NUM_THREADS=1 python scripts/step_identity.py --a BEFORE/src --b AFTER/src --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def child(setup: str, episodes: int, out: str) -> None:
    import numpy as np
    import torch

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

        learner, batch, w = grid_pack_batch(int(setup.removeprefix("pack")), episodes)
    res = {}
    for k in range(2):
        stats = learner.train_step(batch, w)
        res[f"step{k}"] = {kk: np.asarray(v) for kk, v in stats.items()}
    res["tensors"] = {
        f"{name}.{pn}": p.clone()
        for name in ("actors", "critic", "actors_target", "critic_target")
        for pn, p in getattr(learner, name).state_dict().items()
    }
    torch.save(res, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--a")
    ap.add_argument("--b")
    ap.add_argument("--labels", nargs=2, default=["a", "b"])
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--out", required=False)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])
    import numpy as np
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for setup in ("single", f"pack{args.runs}"):
            files = {}
            procs = []
            for name, src in (("a", args.a), ("b", args.b)):
                files[name] = str(Path(d) / f"{setup}_{name}.pt")
                env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "OMP_NUM_THREADS": "1"}
                cmd = [sys.executable, __file__, "--child", setup, str(args.episodes), files[name]]
                procs.append(subprocess.Popen(cmd, env=env))
            for p in procs:
                if p.wait():
                    raise SystemExit(f"a child failed ({setup})")
            a, b = (torch.load(files[k], weights_only=False) for k in ("a", "b"))
            differ = [k for k in a["tensors"] if not torch.equal(a["tensors"][k], b["tensors"][k])]
            stats = {}
            for s in ("step0", "step1"):
                for k in a[s]:
                    gap = float(np.max(np.abs(np.asarray(a[s][k], float) - np.asarray(b[s][k], float))))
                    stats[f"{s}.{k}"] = gap
            rows.append(
                {
                    "setup": setup,
                    "tensors": len(a["tensors"]),
                    "tensors_differing": differ,
                    "statistics_max_abs_gap": stats,
                }
            )
            print(f"{setup}: {len(differ)} of {len(a['tensors'])} tensors differ; stats gaps "
                  f"{ {k: v for k, v in stats.items() if v} }", flush=True)  # fmt: skip
    if args.out:
        res = {
            "benchmark": "step_identity",
            "command": " ".join(["OMP_NUM_THREADS=1", "python", *sys.argv]),
            "sources": {
                "a": {"src": args.a, "label": args.labels[0]},
                "b": {"src": args.b, "label": args.labels[1]},
            },
            "results": rows,
        }
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
