"""Derive benchmarks/published/s10lre4e3_final_returns.csv from the published repository's result
files (TesfayZ/CCM_MADRL_MEC, folder s10lre4e3CCM_MADRL_MEC/CSV/ at the commit that produced them).

    python scripts/published_results.py GIT_DIR [--commit 44fba1b] [--out benchmarks/published/s10lre4e3_final_returns.csv]

GIT_DIR is a clone (or bare mirror) of the repository; files are read with ``git show COMMIT:PATH``.
One row per run: the number of evaluations, the first one, the mean / min / max of the last 100
("final return") and the mean of the last 100 lines of its Server_constraints file. Also every
evaluation of the 10 CCM-MADRL runs (s10lre4e3_ccm_madrl_evaluations.csv, beside --out), to compare
runs at equal progress.
"""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

ALGOS = ("CCM_MADRL", "MADDPG", "offloadtimefirst_MADDPG", "deadline_divide2_size_first_MADDPG")
FOLDER = "s10lre4e3CCM_MADRL_MEC/CSV"


def read(git_dir: str, commit: str, path: str) -> np.ndarray:
    text = subprocess.run(
        ["git", "-C", git_dir, "show", f"{commit}:{FOLDER}/{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return np.loadtxt(io.StringIO(text), ndmin=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("git_dir")
    ap.add_argument("--commit", default="44fba1b75eb297484fbc3575765bed06442083ac")
    ap.add_argument("--out", default="benchmarks/published/s10lre4e3_final_returns.csv")
    args = ap.parse_args()
    rows = []
    for algo in ALGOS:
        for run in range(10):
            r = read(args.git_dir, args.commit, f"results/{algo}{run}.csv")
            c = read(args.git_dir, args.commit, f"Server_constraints/{algo}{run}.csv")
            rows.append(
                {
                    "algo": algo,
                    "run": run,
                    "n_lines": len(r),
                    "first_value": r[0],
                    "last100_mean": r[-100:].mean(),
                    "last100_min": r[-100:].min(),
                    "last100_max": r[-100:].max(),
                    "server_constraint_last100_mean": c[-100:].mean(),
                }
            )
    pd.DataFrame(rows).to_csv(Path(args.out), index=False)
    print(f"wrote {args.out} ({len(rows)} runs)")
    # every CCM-MADRL evaluation, by the episode it precedes (line i: before episode i + 1)
    curves = {f"run_{r}": read(args.git_dir, args.commit, f"results/CCM_MADRL{r}.csv") for r in range(10)}
    df = pd.DataFrame(curves)
    df.insert(0, "episode", np.arange(1, len(df) + 1))
    out = Path(args.out).with_name("s10lre4e3_ccm_madrl_evaluations.csv")
    df.to_csv(out, index=False, float_format="%.12g")
    print(f"wrote {out} ({len(df)} evaluations x 10 runs)")


if __name__ == "__main__":
    main()
