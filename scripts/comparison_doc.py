"""Fill the generated blocks of benchmarks/comparison.md from files in the repository.

    PYTHONPATH=src python scripts/comparison_doc.py            # rewrite the blocks in place
    PYTHONPATH=src python scripts/comparison_doc.py --check    # exit 1 if a block is stale

Blocks (between ``<!-- comparison: NAME -->`` and ``<!-- /comparison -->``):

- ``cell``: CCM-MADRL at the published cell (client lr 1e-4, master lr 1e-3), one row per archived
  2000-episode run of both versions (`results/table1_s10`, `results/table1_s10_published`), with
  the published repository's 10 runs (`benchmarks/published/s10lre4e3_final_returns.csv`);
- ``algorithms``: the other algorithms' 3-seed means (`benchmarks/results/algorithms_s10.csv`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ccm_madrl.archive import ArchiveStore  # noqa: E402
from ccm_madrl.report import stats  # noqa: E402
from ccm_madrl.report.tables import runs_frame  # noqa: E402

DOC = ROOT / "benchmarks" / "comparison.md"
ARCHIVES = {"independent actors (golden system)": "results/table1_s10",
            "`published_code: 44fba1b`": "results/table1_s10_published"}
CELL = (1e-4, 1e-3)
ALL_LOCAL_TOL = 0.01  # as in docs/table1.md: a final return within 0.01 of the all-local policy's
PUBLISHED = "benchmarks/published/s10lre4e3_final_returns.csv"
ALGORITHMS = "benchmarks/results/algorithms_s10.csv"
BLOCK = re.compile(r"(<!-- comparison: (\w+) -->\n)(.*?)(<!-- /comparison -->)", re.S)


def _ep(v: float) -> str:
    return "-" if not np.isfinite(v) else str(int(v))


def _iqm(x) -> str:
    r = stats.iqm_ci(x)
    ci = "" if not np.isfinite(r["ci_low"]) else f" [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"
    return f"{r['iqm']:.1f}{ci} (n = {r['n']})"


def cell_block(root: Path) -> str:
    rows, summary = [], []
    for label, path in ARCHIVES.items():
        store = ArchiveStore(root / path)
        runs = runs_frame(store)
        runs = runs[np.isclose(runs["client_lr"], CELL[0]) & np.isclose(runs["master_lr"], CELL[1])
                    & (runs["status"] == "done")].sort_values("cfg.seed")
        local = store.baselines
        local = local[local["baseline"] == "all_local"].set_index("seed")["final_return"]
        n_local = 0
        for r in runs.to_dict("records"):
            seed = int(r["cfg.seed"])
            at = abs(r["final_return"] - float(local.loc[seed])) <= ALL_LOCAL_TOL
            n_local += int(at)
            pack = r["prov.pack_size"] if pd.notna(r["prov.pack_size"]) else 1
            rows.append(f"| {label} | {seed} | `{r['run_id']}` | {int(pack)} | {r['final_return']:.2f} | "
                        f"{'yes' if at else 'no'} | {_ep(r['all_actors_stop_exact'])} | "
                        f"{_ep(r['all_actors_grad_zero'])} | {_ep(r['critic_stop_exact'])} |")
        summary.append(f"| {label} | {len(runs)} | {_iqm(runs['final_return'])} | {n_local} of {len(runs)} | "
                       f"{int(runs['all_actors_stop_exact'].notna().sum())} of {len(runs)} | `{path}` |")
    pub = pd.read_csv(root / PUBLISHED)
    pub = pub[pub["algo"] == "CCM_MADRL"]
    # the published runs' evaluation episodes: env seed 37, the same for every seed (one all-local value)
    local_pub = float(local.iloc[0])  # ``local``: the last archive's all-local returns, the preset's
    n_pub = int((abs(pub["last100_mean"] - local_pub) <= ALL_LOCAL_TOL).sum())
    summary.append(f"| the published repository's runs | {len(pub)} | {_iqm(pub['last100_mean'])} | "
                   f"{n_pub} of {len(pub)} | (not recorded) | `{PUBLISHED}` |")
    head = ("| version | seed | run | pack size | final return | at the all-local return | all actors stop "
            "| actors' gradient exactly 0 from | critic stop |\n|---|---|---|---|---|---|---|---|---|\n")
    shead = ("| version | runs | final return, IQM [95% CI] | at the all-local return | all actors stopped "
             "| file |\n|---|---|---|---|---|---|\n")
    return head + "\n".join(rows) + "\n\n" + shead + "\n".join(summary) + "\n"


def algorithms_block(root: Path) -> str:
    a = pd.read_csv(root / ALGORITHMS).sort_values("final_return_mean", ascending=False)
    out = ["| algorithm | seeds | final return, mean ± 95% CI | constraint violation |", "|---|---|---|---|"]
    for r in a.itertuples(index=False):
        out.append(f"| {r.algorithm} | {r.seeds} | {r.final_return_mean:.1f} ± {r.final_return_ci95:.1f} | "
                   f"{r.constraint_violation_mean:.3f} |")
    return "\n".join(out) + "\n"


BUILDERS = {"cell": cell_block, "algorithms": algorithms_block}


def render(text: str, root: Path = ROOT) -> str:
    def fill(m: re.Match) -> str:
        name = m.group(2)
        if name not in BUILDERS:
            raise SystemExit(f"comparison_doc: unknown block {name!r} in {DOC.name}")
        return m.group(1) + BUILDERS[name](root) + m.group(4)

    return BLOCK.sub(fill, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", default=str(DOC))
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated block differs from the files")
    args = ap.parse_args()
    doc = Path(args.doc)
    text = doc.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{doc}: generated blocks are stale; run scripts/comparison_doc.py", file=sys.stderr)
            raise SystemExit(1)
        print(f"{doc}: generated blocks match the files")
        return
    doc.write_text(new)
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
