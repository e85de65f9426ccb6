"""Loading a sweep's run summaries: a synthetic 320-run store, before and after compaction.

    PYTHONPATH=src python scripts/bench_store.py --runs 320 --dir /tmp/store_bench \
        --before-src /tmp/base/src --out benchmarks/results/store

Builds one synthetic finished run with the real file layout (2000 episodes, 50 actors + the
critic: ``metrics.parquet`` and 200 monitor parts of 10 episodes, the columns a MEC run writes,
random values), then ``--runs`` run directories that hard-link its files (each with its own
config id), twice: ``parts/`` as runs are written while training (and by every run finished before
compaction existed; ``--before-runs`` of them, as the older code keeps every run's monitor rows in
memory) and ``compacted/`` as a finished run is left now (``monitor.compact``:
agents/episodes/stops files, stop events in status.json). It then times, each in a fresh process,
``ccm_madrl.store.load(dir).runs`` (the run table: config, provenance, final return, stop events)
and ``.stops`` with the code of ``--before-src`` (an older checkout's ``src``) on ``parts/`` and
with this checkout on both. The page cache is warm (the files were just written): the times are
the CPU cost of reading, not of the disk. On a shared machine the wall time depends on the load;
the process CPU time (``*_cpu_s``) is the comparable figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MEASURE = """
import sys, time, json, warnings
warnings.simplefilter("ignore")
from ccm_madrl.store import load
t1, c1 = time.perf_counter(), time.process_time()
s = load(sys.argv[1])
runs = s.runs
t2, c2 = time.perf_counter(), time.process_time()
stops = s.stops
t3, c3 = time.perf_counter(), time.process_time()
print(json.dumps({"runs_wall_s": t2 - t1, "runs_cpu_s": c2 - c1, "stops_wall_s": t3 - t2, "stops_cpu_s": c3 - c2,
                  "n_runs": len(runs),
                  "n_stop_rows": len(stops), "all_actors_stop_thr_nonnull": int(runs["all_actors_stop_thr"].notna().sum())}))
"""


def make_template(d: Path, episodes: int, agents: int, part: int, rng: np.random.Generator) -> None:
    from ccm_madrl.experiment.config import build_config
    from ccm_madrl.monitor.compact import compact_monitor
    from ccm_madrl.monitor.integration import write_summary
    from ccm_madrl.rundir import RunDir

    run = RunDir(d)
    d.mkdir(parents=True)
    cfg = build_config(yaml.safe_load((ROOT / "configs" / "base.yaml").read_text()))
    run.write_config(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    run.write_provenance({"version": "bench", "commit": "bench", "seed": 0})
    m = pd.DataFrame({"episode": np.arange(episodes)})
    for c in ("eval_return", "eval_return_std", "eval_constraint_frac", "train_return", "critic_loss",
              "actor_loss", "q_mean", "target_mean", "batch_reward_abs", "time_eval_s", "time_act_s",
              "time_train_s", "time_episode_s", "actor_grad_norm", "critic_grad_norm", "grad_ratio"):  # fmt: skip
        m[c] = rng.normal(size=episodes)
    m["trained"] = m["episode"] > 0
    run.write_metrics(m)
    n = agents + 1
    # actors stop at staggered episodes (exact zero change from then on), the critic never
    stop_at = np.r_[rng.integers(episodes // 10, episodes // 2, agents), episodes + 1]
    (run.monitor_dir / "agents").mkdir(parents=True)
    layers = ("fc1", "fc2", "fc3")
    for first in range(1, episodes, part):
        eps = np.arange(first, min(first + part, episodes))
        ep = np.repeat(eps, n)
        agent = np.tile(np.r_[np.arange(agents), 0], len(eps))
        actor = np.tile(np.r_[np.ones(agents, bool), False], len(eps))
        moving = ep < np.tile(stop_at, len(eps))
        df = pd.DataFrame({"episode": ep, "role": np.where(actor, "actors", "critic"), "agent": agent,
                           "is_actor": actor, "steps": 1.0, "changed": moving,
                           "max_abs_change": np.where(moving, rng.random(len(ep)) * 1e-4, 0.0)})  # fmt: skip
        for c in ["update_l2", "weight_l2", *[f"update_l2.{k}" for k in layers], *[f"grad_norm.{k}" for k in layers],
                  "grad_norm", "dead.act1", "dormant.act1", "dead.act2", "dormant.act2", "z_mean", "z_std", "z_min",
                  "z_max", "frac_abs_z_gt2", "frac_out_gt09", "frac_sat_exact", "frac_sat_near", "out_mean",
                  "frac_flowing", "frac_saturated", "frac_dead", "frac_no_path", "lr", "reward_abs", "effective_lr"]:  # fmt: skip
            df[c] = rng.random(len(ep))
        df.loc[~moving, "grad_norm"] = 0.0
        df.to_parquet(run.monitor_dir / "agents" / f"part-{eps[0]:07d}-{eps[-1]:07d}.parquet", index=False)
    shutil.copytree(d, d.with_name("template_compacted"))
    c = RunDir(d.with_name("template_compacted"))
    stops = write_summary(c.monitor_dir, cfg.monitor.stop_threshold)
    compact_monitor(c.monitor_dir, cfg.monitor.stop_threshold)
    for r, st in ((run, None), (c, stops)):
        r.write_status({"state": "done", "episodes_done": episodes, "episodes": episodes, "config_id": "template",
                        **({"stops": stops} if st else {})})  # fmt: skip


def replicate(template: Path, dest: Path, runs: int) -> None:
    """``runs`` run directories hard-linking the template's files, each with its own config id."""
    status = json.loads((template / "status.json").read_text())
    for i in range(runs):
        rd = dest / "runs" / f"run{i:04d}"
        for src in template.rglob("*"):
            if src.is_file() and src.name != "status.json":
                tgt = rd / src.relative_to(template)
                tgt.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, tgt)
        (rd / "status.json").write_text(json.dumps({**status, "config_id": f"run{i:04d}"}))
    (dest / "manifest.json").write_text(json.dumps({"sweep": dest.name, "runs": []}))


def measure(src: Path, store_dir: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(store_dir)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=320)
    p.add_argument("--episodes", type=int, default=2000)
    p.add_argument("--agents", type=int, default=50)
    p.add_argument("--dir", default="/tmp/store_bench")
    p.add_argument("--before-src", required=True, help="src/ of the checkout to compare with (e.g. f5e6007)")
    p.add_argument("--before-commit", default="f5e6007")
    p.add_argument(
        "--before-runs",
        type=int,
        default=32,
        help="runs the older code loads (it keeps every run's monitor rows in memory: ~30 MB a run)",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "store"))
    p.add_argument("--reuse", action="store_true", help="use the run directories already in --dir")
    a = p.parse_args()
    d = Path(a.dir)
    t0 = time.perf_counter()
    if not a.reuse:
        shutil.rmtree(d, ignore_errors=True)
        make_template(d / "template", a.episodes, a.agents, 10, np.random.default_rng(0))
        replicate(d / "template_compacted", d / "compacted", a.runs)
        replicate(d / "template", d / "parts_before", a.before_runs)
    build_s = time.perf_counter() - t0
    res = {
        "command": " ".join(["python scripts/bench_store.py", *sys.argv[1:]]),
        "runs": a.runs, "episodes": a.episodes, "agents": a.agents, "build_s": build_s,
        "files_per_run": {k: sum(1 for f in (d / k / "runs" / "run0000").rglob("*") if f.is_file()) for k in ("parts_before", "compacted")},
        "bytes_per_run": {k: sum(f.stat().st_size for f in (d / k).rglob("*") if f.is_file()) for k in ("template", "template_compacted")},
        "before": {"commit": a.before_commit, "runs": a.before_runs, "parts": measure(Path(a.before_src), d / "parts_before")},
        "after": {"commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
                  "parts_before_subset": measure(ROOT / "src", d / "parts_before"),
                  "compacted": measure(ROOT / "src", d / "compacted")},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_avg_at_start": os.getloadavg(), "note": "shared, loaded 2-core machine; page cache warm"},
    }  # fmt: skip
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"store_{a.runs}runs.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
