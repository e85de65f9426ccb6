"""Runs of the ``published_code: 44fba1b`` preset beside the 10 published CCM-MADRL runs, at equal
progress (the single-process runs of `benchmarks/results/published_44fba1b_runs.csv`; benchmarks/comparison.md now quotes the archived Table 1 runs).

    python scripts/published_preset_comparison.py RUN_DIR [...] \
        [--out benchmarks/results/published_44fba1b_eval.csv] [--episode K]

Writes every evaluation and training return of the runs (one column per seed) to ``--out`` and prints
a Markdown table: over the 100 evaluations before episodes K-100 .. K-1 (K = the fewest episodes any
run has done, or ``--episode``; K = 2000 is Table 1's "final return"), the mean, min and max per run,
ours and published (benchmarks/published/s10lre4e3_ccm_madrl_evaluations.csv: line i of a published
results file is the evaluation before episode i + 1). "All-local": every evaluation of the window
equals the all-local, full-compute return to within 0.01.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from algorithm_comparison import all_local_return, ends_at  # noqa: E402

from ccm_madrl.experiment.config import build_config  # noqa: E402
from ccm_madrl.report.tables import mean_ci  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "benchmarks" / "published" / "s10lre4e3_ccm_madrl_evaluations.csv"


def load_runs(dirs: list[str]) -> tuple[pd.DataFrame, dict, object]:
    cols, done, cfg = {}, {}, None
    for d in map(Path, dirs):
        cfg = build_config(yaml.safe_load((d / "config.yaml").read_text()))
        if cfg.published_code != "44fba1b":
            raise ValueError(f"{d}: not a published_code 44fba1b run (published_code: {cfg.published_code})")
        m = pd.read_parquet(d / "metrics.parquet").set_index("episode")
        st = json.loads((d / "status.json").read_text())
        s = cfg.seed
        cols[f"eval_seed{s}"] = m["eval_return"]
        cols[f"train_seed{s}"] = m["train_return"]
        done[s] = (int(len(m)), st.get("state"))
    return pd.DataFrame(cols).rename_axis("episode").reset_index(), done, cfg


def window(values: pd.Series, episodes: pd.Series, k: int) -> pd.Series:
    return values[(episodes >= k - 100) & (episodes < k)].dropna()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "published_44fba1b_eval.csv"))
    ap.add_argument("--published", default=str(PUBLISHED))
    ap.add_argument("--episode", type=int, help="window end K (default: the fewest episodes done)")
    args = ap.parse_args()
    ours, done, cfg = load_runs(args.runs)
    ours.to_csv(args.out, index=False, float_format="%.12g")
    k = args.episode or min(n for n, _ in done.values())
    ref = all_local_return(cfg)
    pub = pd.read_csv(args.published)
    print(f"Window: the 100 evaluations before episodes {k - 100}..{k - 1}; all-local return {ref:.4f}\n")
    print("| run | episodes done | mean | min | max | all-local |")
    print("|---|---|---|---|---|---|")
    means = {}
    for s, (n, state) in sorted(done.items()):
        w = window(ours[f"eval_seed{s}"], ours["episode"], k)
        means[s] = w.mean()
        flat = bool(ends_at(pd.Series([w.min()]), pd.Series([w.max()]), ref).iloc[0])
        print(
            f"| ours, seed {s} | {n} ({state}) | {w.mean():.2f} | {w.min():.2f} | {w.max():.2f} | {'yes' if flat else 'no'} |"
        )
    pmeans = {}
    for c in [c for c in pub.columns if c.startswith("run_")]:
        w = window(pub[c], pub["episode"], k)
        pmeans[c] = w.mean()
        flat = bool(ends_at(pd.Series([w.min()]), pd.Series([w.max()]), ref).iloc[0])
        print(
            f"| published, {c.replace('_', ' ')} | 2000 | {w.mean():.2f} | {w.min():.2f} | {w.max():.2f} | {'yes' if flat else 'no'} |"
        )
    for name, v in (("ours", np.array(list(means.values()))), ("published", np.array(list(pmeans.values())))):
        mu, half, n = mean_ci(pd.Series(v))
        print(
            f"\n{name}: {n} runs, mean {mu:.1f} ± {half:.1f} (95% CI), median {np.median(v):.1f}, "
            f"> -40: {int((v > -40).sum())}/{n}"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
