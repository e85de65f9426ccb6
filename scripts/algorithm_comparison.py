"""Tables of benchmarks/comparison.md: final returns per algorithm of our runs, beside the published
repository's own per-run results (benchmarks/published/s10lre4e3_final_returns.csv).

    python scripts/algorithm_comparison.py SWEEP_OR_RUN_DIR [...] \
        [--published benchmarks/published/s10lre4e3_final_returns.csv] [--variant cfg.agent.variant.actor_sharing ...]

"Final return" is the mean of the last 100 evaluations (each the mean over the 50 fixed evaluation
episodes of the summed shared reward), as in Table 1. A run "ends all-local" when its last 100
evaluations equal the return of the all-local, full-compute policy on the same evaluation episodes
(computed here from the environment, not typed in) to within 0.01.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ccm_madrl.agents import ALGORITHMS, make_learner
from ccm_madrl.experiment.config import build_config
from ccm_madrl.mec import MECEnv, RunRNG, record_episodes
from ccm_madrl.report.tables import mean_ci
from ccm_madrl.store import load

PUBLISHED = Path(__file__).resolve().parents[1] / "benchmarks" / "published" / "s10lre4e3_final_returns.csv"
PUBLISHED_NAMES = {
    "CCM_MADRL": "ccm_madrl",
    "MADDPG": "maddpg",
    "offloadtimefirst_MADDPG": "offloadtimefirst",
    "deadline_divide2_size_first_MADDPG": "deadline_divide2_size_first",
}


def eval_envs(cfg) -> tuple[MECEnv, np.ndarray]:
    """The run's fixed evaluation episodes as one batch of environments, reset: (env, first states)."""
    e = cfg.training.eval_episodes
    env = MECEnv(cfg.env, e, cfg.rng_mode, cfg.env_seed)
    return env, env.reset(table=record_episodes(cfg.env, cfg.rng_mode, cfg.env_seed, range(e)))


def ends_at(lo: pd.Series, hi: pd.Series, ref: float) -> pd.Series:
    """Whether the last evaluations (their min and max) all equal ``ref`` to within 0.01."""
    return (lo - ref).abs().lt(0.01) & (hi - ref).abs().lt(0.01)


def all_local_return(cfg) -> float:
    """Mean evaluation return of every client computing locally at full compute (alpha = 1)."""
    env, _ = eval_envs(cfg)
    e = cfg.training.eval_episodes
    total = np.zeros(e)
    for _ in range(cfg.env.max_steps):
        a = np.ones((e, cfg.env.n_agents, 3))
        a[..., 0] = 0.0
        total += env.step(a)[1]
    return float(total.mean())


def final_policy(run_dir: Path) -> tuple[float, float]:
    """Of the final policy (the run's last checkpoint) on the first state of every evaluation episode:
    the fraction of clients that propose to offload, and the fraction asking for the minimum compute
    (actor output for alpha below -0.9, i.e. alpha < 0.06)."""
    cfg = build_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    learner = make_learner(cfg, RunRNG(cfg.rng_mode, cfg.seed, cfg.env_seed))
    if not hasattr(learner, "policy"):
        return np.nan, np.nan
    learner.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)["learner"])
    u = learner.policy(eval_envs(cfg)[1])
    return float((u[..., 0] >= 0).mean()), float((u[..., 1] < -0.9).mean())


def ours(
    paths: list[str], variants: list[str], unfinished: bool = False, csv: str | None = None
) -> tuple[str, float]:
    s = load(paths)
    runs = s.runs[s.runs["status"] == "done"].copy() if not unfinished else s.runs.copy()
    m = s.metrics
    ref = all_local_return(build_config(s.config(Path(runs["run_dir"].iloc[0]))))
    last = (
        m.dropna(subset=["eval_return"])
        .groupby("run_id")
        .tail(100)
        .groupby("run_id")
        .agg(lo=("eval_return", "min"), hi=("eval_return", "max"))
    )
    runs = runs.join(last, on="run_id")
    runs["all_local"] = ends_at(runs["lo"], runs["hi"], ref)
    pol = [final_policy(Path(rd)) for rd in runs["run_dir"]]
    runs["propose"], runs["alpha_min"] = [p[0] for p in pol], [p[1] for p in pol]
    order = {a: k for k, a in enumerate(ALGORITHMS)}
    runs = runs.sort_values("cfg.agent.algorithm", key=lambda c: c.map(order), kind="stable")
    if csv:
        cols = [
            "run_id",
            "cfg.agent.algorithm",
            *variants,
            "cfg.seed",
            "status",
            "episodes_done",
            "final_return",
        ]
        cols += ["lo", "hi", "all_local", "final_constraint_frac", "propose", "alpha_min", "prov.commit"]
        out = runs[[c for c in dict.fromkeys(cols) if c in runs]].rename(
            columns={"lo": "last100_min", "hi": "last100_max", "propose": "final_propose_frac",
                     "alpha_min": "final_alpha_min_frac"}
        )  # fmt: skip
        if "all_actors_grad_zero" in runs:
            out["actors_grad_zero_from_episode"] = runs["all_actors_grad_zero"]
        out.to_csv(csv, index=False)
    keys = ["cfg.agent.algorithm", *variants]
    lines = [
        "| algorithm"
        + "".join(f" | {v.split('.')[-1]}" for v in variants)
        + " | seeds | final return (mean ± 95% CI) | min | max | seeds > -40 | seeds ending all-local "
        "| constraint violation | final policy: clients proposing | clients at minimum compute "
        "| actors' gradient exactly 0 (seeds) |",
        "|---" * (len(keys) + 10) + "|",
    ]
    for key, g in runs.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        mu, half, n = mean_ci(g["final_return"])
        ci = f"{mu:.1f} ± {half:.1f}" if np.isfinite(half) else f"{mu:.1f}"
        if "all_actors_grad_zero" in g and g["threshold"].notna().any():  # monitored learners
            zero_txt = f"{int(g['all_actors_grad_zero'].notna().sum())}/{n}"
        else:  # non-learning baselines have nothing to monitor
            zero_txt = "-"
        lines.append(
            "| " + " | ".join(str(k) for k in key)
            + f" | {n} | {ci} | {g['final_return'].min():.1f} | {g['final_return'].max():.1f}"
            f" | {int((g['final_return'] > -40).sum())}/{n} | {int(g['all_local'].sum())}/{n}"
            f" | {g['final_constraint_frac'].mean():.3f} | {_frac(g['propose'])} | {_frac(g['alpha_min'])}"
            f" | {zero_txt} |"
        )  # fmt: skip
    return "\n".join(lines), ref


def _frac(x: pd.Series) -> str:
    return "-" if x.isna().all() else f"{x.mean():.2f}"


def published(path: Path, ref: float) -> str:
    df = pd.read_csv(path)
    lines = [
        "| algorithm (published file prefix) | runs | final return: mean | median | min | max "
        "| runs > -40 | runs ending all-local |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for algo, g in df.groupby("algo", sort=False):
        v = g["last100_mean"]
        flat = ends_at(g["last100_min"], g["last100_max"], ref)
        lines.append(
            f"| {PUBLISHED_NAMES.get(algo, algo)} ({algo}) | {len(g)} | {v.mean():.1f} | {v.median():.1f}"
            f" | {v.min():.1f} | {v.max():.1f} | {int((v > -40).sum())}/{len(g)} | {int(flat.sum())}/{len(g)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="sweep or run directories")
    ap.add_argument("--published", default=str(PUBLISHED))
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra grouping column, e.g. cfg.agent.variant.actor_sharing",
    )
    ap.add_argument("--csv", help="also write one row per run to this CSV file")
    ap.add_argument(
        "--include-unfinished",
        action="store_true",
        help="also runs still running or interrupted (final return over their last 100 evaluations so far)",
    )
    args = ap.parse_args()
    table, ref = ours(args.paths, args.variant, args.include_unfinished, args.csv)
    print(f"All-local, full-compute return on these evaluation episodes: {ref:.4f}\n")
    print(table)
    if args.published:
        print()
        print(published(Path(args.published), ref))


if __name__ == "__main__":
    main()
