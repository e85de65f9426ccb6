"""The pack-vs-alone differences that tests/test_pack.py bounds, measured: the first training step
(weights in units of lr, gradients, Adam's m and v, statistics) and 20-episode trajectories (returns
and losses), for the cases the tests run. Run once per CPU code path:

    ATEN_CPU_CAPABILITY=default PYTHONPATH=src python scripts/pack_tolerance_probe.py
    ATEN_CPU_CAPABILITY=avx2 PYTHONPATH=src python scripts/pack_tolerance_probe.py

Writes benchmarks/results/pack_tolerances_<capability>.json (docs/reliability.md, "Differences
expected between machines").
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' configs and helpers: the same cases they bound

import test_pack as T  # noqa: E402
from ccm_madrl.experiment.pack import PackTrainer  # noqa: E402
from ccm_madrl.experiment.runner import Trainer  # noqa: E402
from ccm_madrl.provenance import source_commit  # noqa: E402


def first_step() -> dict:
    out = {}
    for update, algorithm, sharing in [
        ("simultaneous", "ccm_madrl", "independent"),
        ("sequential", "ccm_madrl", "independent"),
        ("sequential", "ccm_madrl", "shared"),
        ("sequential", "maddpg", "independent"),
    ]:
        cfgs, alone, pack, grads, st_a, st_p = T.first_training_step(update, algorithm, sharing)
        k = pack.actors.nets_per_run
        res = {
            "w_rel": 0,
            "dw_over_lr": 0,
            "mv_rel": 0,
            "grad_rel_first": 0,
            "grad_rel_later": 0,
            "stats_rel": 0,
        }
        for i, a in enumerate(alone):
            sd_a, sd_p = a.state_dict(), pack.run_state_dict(i)
            lr = {
                "actors": cfgs[i].agent.actor_lr,
                "critic": cfgs[i].agent.critic_lr,
                "actors_target": cfgs[i].agent.actor_lr,
                "critic_target": cfgs[i].agent.critic_lr,
            }
            for key in ("actors", "critic", "actors_target", "critic_target"):
                for name, v in sd_a[key].items():
                    if v is None:
                        continue
                    res["w_rel"] = max(res["w_rel"], T.rel(v, sd_p[key][name]))
                    res["dw_over_lr"] = max(
                        res["dw_over_lr"], float((v - sd_p[key][name]).abs().max()) / lr[key]
                    )
            for name in ("m", "v"):
                for x, y in zip(sd_a["actor_opt"][name], sd_p["actor_opt"][name]):
                    res["mv_rel"] = max(res["mv_rel"], T.rel(x, y))
            for key in ("critic_loss", "actor_loss", "q_mean", "target_mean", "batch_reward_abs"):
                res["stats_rel"] = max(res["stats_rel"], T.rel(st_a[i][key], st_p[i][key]))
            mine = [g for j, _, g in grads["alone"] if j == i]
            for s, (ga, (_, gp)) in enumerate(zip(mine, grads["pack"])):
                for x, y in zip(ga, gp):
                    r = T.rel(x, y[i * k : (i + 1) * k])
                    key = "grad_rel_first" if s == 0 else "grad_rel_later"
                    res[key] = max(res[key], r)
        out[f"{update}-{algorithm}-{sharing}"] = res
    return out


def trajectories() -> dict:
    out = {}
    for update, rng in [
        ("simultaneous", "reference"),
        ("sequential", "reference"),
        ("simultaneous", "independent"),
    ]:
        cfgs = T.configs(update, rng)
        d = Path(tempfile.mkdtemp())
        PackTrainer(cfgs, [d / "pack" / c.name for c in cfgs]).run()
        res = {c: 0.0 for c in T.COLUMNS}
        for c in cfgs:
            Trainer(c, d / "alone" / c.name, progress=False, quiet=True).run()
            a = pd.read_parquet(d / "alone" / c.name / "metrics.parquet")
            p = pd.read_parquet(d / "pack" / c.name / "metrics.parquet")
            for col in T.COLUMNS:
                x, y = a[col].to_numpy(), p[col].to_numpy()
                ok = ~np.isnan(x)
                res[col] = max(res[col], T.rel(x[ok], y[ok]))
        out[f"{update}-{rng}"] = res
    return out


def main() -> None:
    torch.set_num_threads(1)
    cap = os.environ.get("ATEN_CPU_CAPABILITY", "default")
    res = {
        "command": f"ATEN_CPU_CAPABILITY={cap} PYTHONPATH=src python scripts/pack_tolerance_probe.py",
        "capability": cap,
        "torch": torch.__version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        **source_commit(),
        "note": "max over the 4 runs of each case; w: max |w_pack - w_alone| / lr (dw_over_lr) and "
        "norm-wise relative (w_rel); grad_rel_first: the first actor step, grad_rel_later: the later ones",
        "first_training_step": first_step(),
        "trajectory_20_episodes": trajectories(),
    }
    out = ROOT / "benchmarks" / "results" / f"pack_tolerances_{cap}.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
