"""Record the run ids that existing run and sweep directories depend on (tests/data/run_ids.json).

Run ids are hashes of the resolved config (``ExperimentConfig.id``); a sweep resumes and skips its
finished runs by id, so a change of config layout must leave every id as it was. This script wrote the
fixture at commit f5e6007 (before the nested agent config); ``tests/test_config_migration.py``
recomputes every id and compares.

    PYTHONPATH=src python scripts/record_run_ids.py > tests/data/run_ids.json
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from ccm_madrl.experiment.config import ConfigError, build_config, load_config, load_yaml
from ccm_madrl.sweep import expand, load_sweep

# Configs with every agent option away from its default (flat keys, as files before 0.2.0 wrote them).
EVERY_OPTION = {
    "ccm_entropy": {
        "actor_lr": 0.5,
        "critic_lr": 0.25,
        "gamma": 0.9,
        "batch_size": 32,
        "replay_capacity": 500,
        "per_alpha": 0.5,
        "per_eps": 0.02,
        "per_beta0": 0.5,
        "per_beta_increment": 0.002,
        "epsilon_start": 0.9,
        "epsilon_end": 0.05,
        "epsilon_decay": 100.0,
        "episodes_before_train": 2,
        "optimizer": "rmsprop",
        "actor_update": "simultaneous",
        "actor_sharing": "shared",
        "actor_objective": "selected",
        "actor_joint_states": "next",
        "actor_hidden": [16, 8],
        "critic_hidden": [32, 16],
        "activation": "tanh",
        "reward_scale": 0.5,
        "rejected": "local",
        "reward_norm": "running",
        "actor_output_lr_scale": 0.5,
        "actor_grad_clip": 1.0,
        "critic_grad_clip": 2.0,
        "actor_reg": "entropy",
        "actor_reg_coef": 0.01,
        "actor_layernorm": True,
        "input_norm": True,
    },
    "maddpg_preact": {
        "algorithm": "maddpg",
        "optimizer": "sgd",
        "activation": "softsign",
        "actor_reg": "preact",
        "actor_reg_coef": 0.001,
        "epsilon_decay": 7.5,
    },
}


def main() -> None:
    out: dict = {
        "provenance": "scripts/record_run_ids.py at commit "
        + subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "configs": {},
        "every_option": {},
        "sweeps": {},
    }
    for name, agent in EVERY_OPTION.items():
        cfg = build_config({"agent": agent})
        out["every_option"][name] = {"id": cfg.id(), "resolved": cfg.model_dump(mode="json")}
    for p in sorted(Path("configs").rglob("*.yaml")):
        if "axes" not in load_yaml(p):
            out["configs"][str(p)] = load_config(p).id()
            continue
        for label, sets in (("", []), (" --set published_code=44fba1b", ["published_code=44fba1b"])):
            try:
                spec, base = load_sweep(p, set_=sets)
                ids = [r.id for r in expand(spec, base, str(p))]
            except ConfigError:
                continue  # a sweep whose axes contradict the preset
            out["sweeps"][str(p) + label] = {
                "runs": len(ids),
                "first": ids[0],
                "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
                **({"ids": ids} if p.name == "table1_s10.yaml" else {}),
            }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
