"""How far the joint first-layer part kept by rank-3 updates (``ActorSteps.update_joint``) drifts
from the full products over the actor steps of training steps: after each actor step, the kept
``base`` against ``W_S S + b + W_U U`` in two products (what the steps computed before) and against
the one product ``W [S, U] + b`` (``critic.joint``), as the largest absolute gap over the batch
divided by the largest ``|joint|``; per actor step, over ``--steps`` training steps of a default
run (N = 50, batch 64) trained ``--episodes`` episodes.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/joint_drift_probe.py --out benchmarks/results/sequential/floor/joint_drift.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ccm_madrl.agents import offpolicy
from ccm_madrl.experiment.config import build_config
from ccm_madrl.experiment.runner import Trainer
from ccm_madrl.provenance import collect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = build_config(
        {
            "training": {"episodes": args.episodes, "eval_episodes": 0, "tensorboard": False},
            "monitor": {"enabled": False},
        }
    )
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, Path(d) / "run", progress=False, quiet=True)
        tr.run()
    learner = tr.learner
    gaps_two, gaps_one = [], []
    plain = offpolicy.ActorSteps.update_joint

    def probe(self, agent, new):
        plain(self, agent, new)
        u = self.u.clone()
        u[:, agent] = new
        critic = self.learner.critic
        two = self.state_part + critic.joint_actions(u)
        one = critic.joint(self.states, u)  # joint states = states in the published configuration
        scale = float(one.abs().max())
        gaps_two[-1].append(float((self.base - two).abs().max()) / scale)
        gaps_one[-1].append(float((self.base - one).abs().max()) / scale)

    offpolicy.ActorSteps.update_joint = probe
    rng = np.random.default_rng(0)
    split = []  # the two-product form against the one product, for scale
    for _ in range(args.steps):
        batch, _, w = learner.replay.sample(64, rng)
        with torch.no_grad():
            s = batch["states"]
            u = learner.actors(s)
            one = learner.critic.joint(s, u)
            two = learner.critic.joint_state(s) + learner.critic.joint_actions(u)
            split.append(float((two - one).abs().max() / one.abs().max()))
        gaps_two.append([])
        gaps_one.append([])
        learner.train_step(batch, w)
    offpolicy.ActorSteps.update_joint = plain
    g2, g1 = np.array(gaps_two), np.array(gaps_one)
    res = {
        "benchmark": "joint_drift_probe",
        "command": "PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/joint_drift_probe.py "
        f"--episodes {args.episodes} --steps {args.steps} --out {args.out}",
        "provenance": collect(),
        "what": "max |kept base - full product| / max |joint| after each actor step (rows: training steps)",
        "vs_two_products": g2.tolist(),
        "vs_one_product": g1.tolist(),
        "max_vs_two_products": float(g2.max()),
        "max_vs_one_product": float(g1.max()),
        "after_last_actor_step_vs_two_products": g2[:, -1].tolist(),
        "two_products_vs_one_product_at_step_start": split,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(
        f"kept base vs two products: max {g2.max():.2e} (after the 50th step, median "
        f"{np.median(g2[:, -1]):.2e}); vs one product: max {g1.max():.2e}; two vs one products: max "
        f"{max(split):.2e}"
    )


if __name__ == "__main__":
    main()
