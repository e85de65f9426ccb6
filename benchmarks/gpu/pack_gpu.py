"""The packed engine on a GPU, in one short session (``benchmarks/gpu/run.sh`` calls the stages).

Stages (each writes one JSON file into OUT):
  agree   4 runs (different seeds and learning rates) packed on DEVICE against each run alone on
          DEVICE and alone on the CPU (the exactness reference): per-episode agreement of the
          evaluation returns, the training returns and the steps where the server's limits were
          exceeded, 20 episodes, both update orders at N = 12 and the published order at N = 50.
  grid    configs/paper/table1_s10.yaml (160 runs, published sequential order, monitor on, every run
          checkpointed every 10 episodes: the sweep exactly as configured) as ONE pack on DEVICE for
          SECONDS of wall time: the wall time of every pack episode (the whole loop iteration:
          monitor, metrics, checkpoints included) and the 2000-episode extrapolation.

Run: PYTHONPATH=src python benchmarks/gpu/pack_gpu.py {agree,grid} --out OUT [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ccm_madrl import jsonio
from ccm_madrl.bench import machine
from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.experiment.pack import PackTrainer
from ccm_madrl.experiment.stop import StopToken
from ccm_madrl.rundir import SweepDir
from ccm_madrl.sweep import expand, load_sweep

LRS = [(1e-4, 1e-3), (1e-3, 1e-2), (1e-2, 1e-3), (1e-1, 1e-1)]


def _cfgs(size: str, update: str, device: str, episodes: int) -> list:
    out = []
    for seed, (a, c) in enumerate(LRS):
        d = {
            "seed": seed,
            "name": f"r{seed}",
            "device": device,
            "agent": {"actor_update": update, "actor_lr": a, "critic_lr": c},
            "training": {"episodes": episodes, "tensorboard": False, "checkpoint_every": 10**6},
            "monitor": {"enabled": False},
        }
        if size == "small":
            d["env"] = {"n_agents": 12, "max_steps": 4}
            d["agent"].update(batch_size=16, critic_hidden=[64, 32])
            d["training"]["eval_episodes"] = 3
        out.append(build_config(d))
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if not ok.any():
        return float("nan")
    return float(np.max(np.abs(a[ok] - b[ok])) / max(np.max(np.abs(a[ok])), 1e-30))


def _compare(x: pd.DataFrame, y: pd.DataFrame) -> dict:
    ex, ey = x["eval_constraint_frac"].fillna(-1).to_numpy(), y["eval_constraint_frac"].fillna(-1).to_numpy()
    same = ex == ey
    return {
        "episodes": len(x),
        "eval_constraint_frac_equal_episodes": int(same.sum()),
        "first_differing_episode": int(np.flatnonzero(~same)[0]) if (~same).any() else None,
        "eval_return_max_rel_diff": _rel(x["eval_return"].to_numpy(), y["eval_return"].to_numpy()),
        "eval_return_max_rel_diff_first_5": _rel(
            x["eval_return"].to_numpy()[:5], y["eval_return"].to_numpy()[:5]
        ),
        "train_return_max_rel_diff": _rel(x["train_return"].to_numpy(), y["train_return"].to_numpy()),
    }


CASES = (("small", "sequential"), ("small", "simultaneous"), ("published", "sequential"))


def agree(out: Path, device: str, episodes: int, cases: tuple = CASES) -> dict:
    res = {"stage": "agree", "device": device, "machine": machine(), "episodes": episodes, "cases": []}
    for size, update in cases:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            dev_cfgs = _cfgs(size, update, device, episodes)
            PackTrainer(dev_cfgs, [d / "pack" / c.name for c in dev_cfgs]).run()
            for c, ref in zip(dev_cfgs, _cfgs(size, update, "cpu", episodes)):
                Trainer(c, d / "alone" / c.name, progress=False, quiet=True).run()
                Trainer(ref, d / "cpu" / c.name, progress=False, quiet=True).run()
                p, a, r = (
                    pd.read_parquet(d / k / c.name / "metrics.parquet") for k in ("pack", "alone", "cpu")
                )
                case = {
                    "size": size,
                    "update": update,
                    "run": c.name,
                    "actor_lr": c.agent.actor_lr,
                    "critic_lr": c.agent.critic_lr,
                    "pack_vs_alone_same_device": _compare(a, p),
                    "device_alone_vs_cpu_alone": _compare(r, a),
                    "device_pack_vs_cpu_alone": _compare(r, p),
                }
                res["cases"].append(case)
                (out / "agree.json").write_text(jsonio.dumps(res))  # what is done so far survives a timeout
                print(json.dumps(case), flush=True)
        res.setdefault("wall_s", {})[f"{size}_{update}"] = time.perf_counter() - t0
        (out / "agree.json").write_text(jsonio.dumps(res))
    return res


def grid(
    out: Path,
    device: str,
    seconds: float,
    sweep: str,
    sets: list[str],
    seeds: str | None,
    max_episodes: int,
    profile: tuple[int, int] | None,
    keep: Path | None = None,
) -> dict:
    spec, base = load_sweep(sweep, set_=[f"device={device}", *sets], seeds=seeds)
    runs = expand(spec, base, sweep)
    cfgs = [r.config for r in runs]
    total = cfgs[0].training.episodes
    stamps: list[float] = []
    orig = PackTrainer.episode

    prof = cProfile.Profile()

    def timed_episode(self, ep):
        if not stamps:  # the time cap counts from the first episode, after the runs are built
            timer.start()
        if profile and ep == profile[0]:
            prof.enable()
        if profile and ep == profile[1] + 1:  # whole loop iterations: monitor and callbacks included
            prof.disable()
        if ep + 1 >= max_episodes:
            stop.request()  # taken after this episode
        stamps.append(time.perf_counter())
        return orig(self, ep)

    PackTrainer.episode = timed_episode
    stop = StopToken()
    timer = threading.Timer(seconds, stop.request)
    res = {
        "stage": "grid",
        "sweep": sweep,
        "runs": len(cfgs),
        "device": device,
        "machine": machine(),
        "time_cap_s": seconds,
        "overrides": sets,
        "episodes_per_run": total,
        "kept_in": str(keep) if keep else None,
    }
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with contextlib.ExitStack() as stack:
        if keep is None:
            d = Path(stack.enter_context(tempfile.TemporaryDirectory(dir="/tmp")))
        else:  # a sweep directory that `ccm-madrl archive` reads (runs/<id>, a manifest naming the sweep)
            d = keep / "runs"
            d.mkdir(parents=True, exist_ok=True)
            SweepDir(keep).write_manifest(keep.name, [{"id": r.id, "state": "queued"} for r in runs])
        t_build = time.perf_counter()
        dirs = [d / r.id for r in runs]
        tr = PackTrainer(cfgs, dirs, stop=stop)
        try:
            tr.run()
        except KeyboardInterrupt:
            pass
        finally:
            timer.cancel()
        t_end = time.perf_counter()
        failed = sum(1 for x in dirs if '"failed"' in (x / "status.json").read_text())
        m0 = dirs[0] / "metrics.parquet"
        r0 = pd.read_parquet(m0) if m0.exists() else None
    stamps.append(t_end)
    it = np.diff(stamps)  # the wall time of each loop iteration (the last one: up to the stop)
    done = len(it)  # episodes completed (the stop is taken after an episode's bookkeeping)
    ebt = cfgs[0].agent.replay.episodes_before_train
    keep = np.ones(done, dtype=bool)
    keep[: min(done, ebt + 2)] = done <= ebt + 4
    if profile:  # the profiled episodes run slower under cProfile
        keep[profile[0] : profile[1] + 1] = False
        for order in ("tottime", "cumulative"):
            with open(out / f"grid_profile_{order}.txt", "w") as f:
                pstats.Stats(prof, stream=f).sort_stats(order).print_stats(70)
    steady = it[:done][keep]
    med = float(statistics.median(steady)) if len(steady) else float("nan")
    res.update(
        setup_s=stamps[0] - t_build,
        episodes_completed=done,
        runs_failed=failed,
        pack_episode_s=[float(x) for x in it[:done]],
        steady_pack_episode_s_median=med,
        steady_pack_episode_s_p90=float(np.percentile(steady, 90)) if len(steady) else float("nan"),
        run_episode_ms_median=1e3 * med / len(cfgs),
        profiled_episodes=list(profile) if profile else None,
        extrapolated_grid_wall_min=(float(np.sum(it[:done][keep])) + (total - int(keep.sum())) * med) / 60,
        extrapolation="measured episodes + (episodes_per_run - measured) x the median steady pack episode; "
        "the cost per episode moves with the number of proposing agents as the actors learn",
        peak_gpu_memory_mib=(
            torch.cuda.max_memory_allocated() / 2**20 if torch.device(device).type == "cuda" else None
        ),
        # the run's own metrics: its share (1/R) of the pack's episode, without monitor and callbacks
        metrics_r0_time_episode_s_median=(
            float(r0["time_episode_s"].iloc[ebt + 2 :].median()) if r0 is not None else None
        ),
    )
    (out / "grid.json").write_text(jsonio.dumps(res))
    print(json.dumps({k: v for k, v in res.items() if k not in ("pack_episode_s", "machine")}), flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["agree", "grid"])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--episodes", type=int, default=20, help="agree: episodes per run")
    p.add_argument("--small-only", action="store_true", help="agree: only the N = 12 cases")
    p.add_argument("--seconds", type=float, default=200.0, help="grid: wall time to train for")
    p.add_argument("--sweep", default="configs/paper/table1_s10.yaml")
    p.add_argument("--set", action="append", default=[], help="grid: KEY=VALUE override of the sweep's base")
    p.add_argument("--seeds", default=None, help="grid: the sweep's seeds (default: its own)")
    p.add_argument("--max-episodes", type=int, default=10**9, help="grid: stop after this many episodes")
    p.add_argument(
        "--profile", default=None, help="grid: FIRST,LAST episodes to profile with cProfile (not timed)"
    )
    p.add_argument(
        "--keep",
        default=None,
        help="grid: keep the runs in this sweep directory (runs/<id>, interrupted at the stop; the sweep's "
        "name is the directory's) for "
        "`ccm-madrl archive --include-interrupted`; default: a temporary directory",
    )
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.stage == "agree":
        agree(out, a.device, a.episodes, CASES[:2] if a.small_only else CASES)
    else:
        prof = tuple(int(x) for x in a.profile.split(",")) if a.profile else None
        grid(
            out,
            a.device,
            a.seconds,
            a.sweep,
            a.set,
            a.seeds,
            a.max_episodes,
            prof,
            Path(a.keep) if a.keep else None,
        )


if __name__ == "__main__":
    main()
