"""FLOPs of one evaluation of a pack (``FlopCounterMode`` over ``Engine.evaluate``: R x 50
environments x 10 steps), after 3 training episodes of ``bench.grid_configs(R, "sequential")``,
monitor off, one torch thread; the total, per run and per operator. Run it once per source tree.

    PYTHONPATH=TREE/src OMP_NUM_THREADS=1 python scripts/ab_eval_flops.py --runs 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ccm_madrl.bench import grid_configs
from ccm_madrl.experiment.pack import PackTrainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=16)
    r = ap.parse_args().runs
    torch.set_num_threads(1)
    training = {"episodes": 3, "eval_episodes": 50, "tensorboard": False}
    cfgs = grid_configs(r, "sequential", training, {"enabled": False})
    with tempfile.TemporaryDirectory() as d:
        tr = PackTrainer(cfgs, [Path(d) / c.name for c in cfgs])
        tr.run()
        fc = FlopCounterMode(display=False)
        with fc:
            tr.evaluate()
    tot = fc.get_total_flops()
    by_op = {str(k): v / 1e9 for k, v in fc.get_flop_counts()["Global"].items()}
    print(json.dumps({"gflop_eval": tot / 1e9, "gflop_per_run": tot / 1e9 / r, "by_op": by_op}))


if __name__ == "__main__":
    main()
