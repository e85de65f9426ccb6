"""BenchMARL's algorithms on the MEC task beside CCM-MADRL, the package's MADDPG benchmark and the
non-learning heuristics, at one frame budget, all evaluated on the package's fixed evaluation
episodes (the episodes the trainer evaluates on: seeds 0 .. E-1 of the evaluation streams, same
devices, greedy / deterministic actions).

::

    python -m ccm_madrl.integrations.mec_benchmark --out benchmarks/results/benchmarl \\
        --frames 3000 --n-agents 20 --seeds 0 1 2

trains in ``--work`` (default ``runs/benchmarl-bench``) and writes to ``--out``
``records/<method>-s<seed>.json`` per finished run (a re-run with the same settings skips them, so an
interrupted benchmark resumes and several processes may share the seeds), then ``runs.csv`` (one
row per run), ``summary.csv`` (mean and std over seeds per method), ``summary.md`` (the same as a
Markdown table) and ``benchmark.json`` (settings, provenance, the summary). One frame is one
environment step of all N clients (BenchMARL's frame); a package learner trains for
``frames / max_steps`` episodes. Budget per algorithm: BenchMARL's off-policy algorithms collect
``--off-policy-frames-per-batch`` frames per iteration and take BenchMARL's default number of
optimiser steps per frame (1000 per 6000); the on-policy ones collect
``--on-policy-frames-per-batch`` and pass over each batch 3 times in minibatches of
``--on-policy-minibatch`` (BenchMARL's default: 45 x 400 of 6000); everything else is BenchMARL's
default config of the algorithm, its MLP and its experiment.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..mec.config import MECConfig
from ..mec.env import MECEnv, record_episodes
from ..mec.wrappers import apply_master_rule

HEURISTIC_METHODS = (
    "all_local",
    "random_selection",
    "greedy_deadline",
    "rule:offloadtimefirst+local",
    "rule:maddpg",
)
PACKAGE_METHODS = ("ccm_madrl", "maddpg")
BENCHMARL_METHODS = ("benchmarl_maddpg", "benchmarl_masac", "benchmarl_mappo", "benchmarl_ippo")
METHODS = (*HEURISTIC_METHODS, *PACKAGE_METHODS, *BENCHMARL_METHODS)

HybridFn = Callable[[np.ndarray], np.ndarray]  # states (E, N, 7) -> hybrid action (E, N, 3)


def evaluate(act: HybridFn, env_cfg: MECConfig, rng_mode: str, env_seed: int, episodes: int) -> dict:
    """The package's evaluation protocol for any policy: the ``episodes`` fixed evaluation episodes
    (recorded draws of evaluation seeds 0 .. episodes-1) on the devices of ``env_seed``, all as one
    batch of environments; returns the mean, std and per-episode returns."""
    table = record_episodes(env_cfg, rng_mode, env_seed, range(episodes))
    devices = MECEnv(env_cfg, 1, rng_mode, env_seed).devices
    env = MECEnv(env_cfg, episodes, rng_mode, env_seed, devices=devices)
    obs = env.reset(table=table)
    ret = np.zeros(episodes)
    for _ in range(env_cfg.max_steps):
        obs, r, _, _ = env.step(act(obs))
        ret += r
    return {"eval_return": float(ret.mean()), "eval_return_std": float(ret.std()), "returns": ret.tolist()}


def _package_config(method: str, env_cfg: MECConfig, seed: int, episodes: int, agent: dict):
    from ..experiment.config import build_config

    algo = {"ccm_madrl": "ccm_madrl", "maddpg": "maddpg"}.get(method, method)
    return build_config(
        {
            "name": f"bench-{method}",
            "seed": seed,
            "device": "cpu",
            "env": env_cfg.model_dump(mode="json"),
            "agent": {"algorithm": algo, **agent},
            "training": {"episodes": max(episodes, 1), "eval_episodes": 0, "tensorboard": False},
            "monitor": {"enabled": False},
        }
    )


def run_method(method: str, seed: int, args: argparse.Namespace, work: Path) -> dict:
    """Train (if it learns) and evaluate one method with one seed; returns its result record."""
    env_cfg = MECConfig(n_agents=args.n_agents, max_steps=args.max_steps)
    t0 = time.perf_counter()
    info: dict = {}
    if method in HEURISTIC_METHODS and method.startswith("rule:"):
        rule = method.split(":", 1)[1]

        def act(states):  # everybody proposes at full compute and transmit power
            return apply_master_rule(rule, states, np.ones(states.shape[:2] + (3,)), env_cfg)[0]

    elif method in HEURISTIC_METHODS or method in PACKAGE_METHODS:
        from ..experiment.runner import Trainer

        episodes = args.frames // args.max_steps if method in PACKAGE_METHODS else 1
        agent = {"actor_update": args.actor_update} if method in PACKAGE_METHODS else {}
        cfg = _package_config(method, env_cfg, seed, episodes, agent)
        run_dir = work / f"{method}-s{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a finished run dir would not rebuild its learner
        trainer = Trainer(cfg, run_dir, progress=False, quiet=True)
        summary = trainer.run()
        learner = trainer.learner
        info = {"episodes": summary.episodes_done, "config_id": cfg.id()}

        def act(states):
            return learner.act(states, explore=False).hybrid

    elif method in BENCHMARL_METHODS:
        from .benchmarl import MECTask, make_mec_experiment, policy_fn

        algo = method.split("_", 1)[1]
        task = MECTask.OFFLOADING.get_task(
            {"master_rule": args.master_rule, "n_agents": args.n_agents, "max_steps": args.max_steps}
        )
        on_policy = algo in ("mappo", "ippo")
        fpb = args.on_policy_frames_per_batch if on_policy else args.off_policy_frames_per_batch
        exp = make_mec_experiment(
            algo,
            task,
            seed,
            work / f"{method}-s{seed}",
            max_frames=args.frames,
            frames_per_batch=fpb,
            optimizer_steps=max(1, round(fpb * 1000 / 6000)),  # BenchMARL's default ratio
            minibatch_size=args.on_policy_minibatch,
            minibatch_iters=max(1, round(3 * fpb / args.on_policy_minibatch)),  # BenchMARL's 3 passes
        )
        exp.run()
        u_of = policy_fn(exp)
        info = {"frames": int(exp.total_frames), "iterations": int(exp.n_iters_performed)}

        def act(states):
            return apply_master_rule(args.master_rule, states, u_of(states), env_cfg)[0]

    else:
        raise ValueError(f"method: unknown {method!r}; allowed: {', '.join(METHODS)}")
    t_train = time.perf_counter() - t0
    res = evaluate(act, env_cfg, "reference", 37, args.eval_episodes)
    return {"method": method, "seed": seed, **res, "train_seconds": t_train, **info}


def summarise(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame(
        [{k: v for k, v in r.items() if k not in ("returns", "settings", "provenance")} for r in records]
    )
    order = {m: i for i, m in enumerate(METHODS)}
    runs = runs.sort_values(["method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c)
    summary = (
        runs.groupby("method", sort=False)
        .agg(
            eval_return_mean=("eval_return", "mean"),
            eval_return_std_over_seeds=("eval_return", "std"),
            seeds=("seed", "count"),
            train_seconds_mean=("train_seconds", "mean"),
        )
        .reset_index()
    )
    return runs.reset_index(drop=True), summary


def markdown_table(runs: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The summary as a Markdown table: mean (std over seeds) and each seed's return."""
    lines = [
        "| method | eval return, mean over seeds (std) | per seed | training s per run (mean) |",
        "|---|---|---|---|",
    ]
    for _, row in summary.iterrows():
        per = runs[runs["method"] == row["method"]]
        seeds = ", ".join(f"{r.eval_return:.2f} (s{r.seed})" for r in per.itertuples())
        std = f" ({row['eval_return_std_over_seeds']:.2f})" if row["seeds"] > 1 else ""
        lines.append(
            f"| {row['method']} | {row['eval_return_mean']:.2f}{std} | {seeds} | {row['train_seconds_mean']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ccm_madrl.integrations.mec_benchmark", description=__doc__)
    p.add_argument("--out", default="benchmarks/results/benchmarl")
    p.add_argument("--work", default="runs/benchmarl-bench", help="run directories of the training")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--frames", type=int, default=3000, help="environment steps of training per run")
    p.add_argument("--n-agents", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--master-rule", default="maddpg", help="the BenchMARL task's master rule")
    p.add_argument("--actor-update", default="simultaneous", choices=("sequential", "simultaneous"))
    p.add_argument("--off-policy-frames-per-batch", type=int, default=100)
    p.add_argument("--on-policy-frames-per-batch", type=int, default=500)
    p.add_argument("--on-policy-minibatch", type=int, default=100)
    args = p.parse_args(argv)
    for field in ("frames", "n_agents", "max_steps", "eval_episodes"):
        if getattr(args, field) < 1:
            p.error(f"--{field.replace('_', '-')}: must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from ..provenance import collect
    from ..rundir import write_json as write

    args = parse_args(argv)
    out = Path(args.out)
    (out / "records").mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work", "methods", "seeds")}
    for seed in args.seeds:  # seed-major: an interrupted benchmark has every method's first seeds
        for method in args.methods:
            path = out / "records" / f"{method.replace(':', '_')}-s{seed}.json"
            if path.exists() and json.loads(path.read_text()).get("settings") == settings:
                continue  # finished with these settings
            prov = collect()
            rec = {
                **run_method(method, seed, args, work),
                "settings": settings,
                "provenance": {
                    k: prov.get(k) for k in ("commit", "dirty", "version", "hostname", "time_utc")
                },
            }
            write(path, rec)
            print(
                f"{method} seed {seed}: eval return {rec['eval_return']:.2f} ({rec['train_seconds']:.0f} s)"
            )
            sys.stdout.flush()
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    runs, summary = summarise([r for r in records if r.get("settings") == settings])
    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown_table(runs, summary))
    write(
        out / "benchmark.json",
        {
            "settings": settings,
            "evaluation": f"{args.eval_episodes} fixed evaluation episodes (seeds 0..{args.eval_episodes - 1}), "
            "rng_mode reference, env_seed 37, greedy/deterministic actions",
            "provenance": collect(),
            "summary": summary.to_dict(orient="records"),
        },
    )
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
