"""docs/screens.md: reduced-design screens (docs/findings.md) against the baseline, from archived
runs only. Each run's variant is what its config changes from the baseline's (the config fields
that differ, besides the seed and the learning rates); one table row per variant and client lr,
then each variant against the baseline, cell by cell, with Holm's correction over the table.

Run: PYTHONPATH=src python scripts/screens_doc.py results/screen_baseline results/screen_activations ... \
         --out docs/screens.md
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from table1_doc import md, monitor_facts  # noqa: E402

from ccm_madrl.archive import ArchiveStore  # noqa: E402
from ccm_madrl.report import claims, stats  # noqa: E402
from ccm_madrl.report.tables import runs_frame  # noqa: E402

BASELINE = "screen_baseline"
EVENTS = (("all actors stop (thr)", "all_actors_stop_thr"), ("gradient exactly 0", "all_actors_grad_zero"),
          ("critic stop (thr)", "critic_stop_thr"))  # fmt: skip
ATTRIBUTION = (
    ("flowing", "frac_flowing_mean"),
    ("saturated", "frac_saturated_mean"),
    ("no path", "frac_no_path_mean"),
)
# config fields that name or seed a run, or are the screen's cells: never part of a variant
NOT_VARIANT = {"cfg.name", "cfg.seed", "cfg.agent.actor_lr", "cfg.agent.critic_lr"}


def variant_labels(runs: pd.DataFrame, baseline: str = BASELINE) -> pd.Series:
    """Per run: "baseline", or the config fields in which it differs from the baseline's runs
    (``key=value``, the key's last part), prefixed by its sweep; a run of another sweep with the
    baseline's settings reads "<sweep>: the baseline's settings"."""
    base = runs[runs["sweep_dir"] == baseline]
    cols = [c for c in runs.columns if c.startswith("cfg.") and c not in NOT_VARIANT]
    ref = {c: base[c].iloc[0] for c in cols if len(base) and base[c].astype(str).nunique() == 1}

    def label(r: pd.Series) -> str:
        if r["sweep_dir"] == baseline:
            return "baseline"
        diff = [f"{c.rsplit('.', 1)[-1]}={r[c]}" for c in cols if c in ref and str(r[c]) != str(ref[c])]
        return f"{r['sweep_dir'].removeprefix('screen_')}: " + (", ".join(diff) or "the baseline's settings")

    return runs.apply(label, axis=1)


def attribution(store: ArchiveStore) -> pd.DataFrame:
    """Per run: the monitor's cause attribution of the actors' output gradients (fractions flowing /
    zero by a saturated output / zero with no path from the loss), mean of the last 20 episodes."""
    m = store.table("monitor_summary", ["episode", "is_actor", *(c for _, c in ATTRIBUTION)])
    a = m[m["is_actor"].astype(bool)]
    return (
        a.sort_values("episode")
        .groupby("run_id")
        .tail(20)
        .groupby("run_id")[[c for _, c in ATTRIBUTION]]
        .mean()
    )


def ordered_variants(runs: pd.DataFrame, baseline: str) -> list[str]:
    """The variants of ``runs`` (column ``variant``): the baseline first, then by sweep and label."""
    first = runs.groupby("variant")["sweep_dir"].min()
    return sorted(first.index, key=lambda v: (v != baseline, first[v], v))


def _cell_row(variant: str, lr: float, g: pd.DataFrame, f: pd.DataFrame, c: pd.DataFrame) -> dict:
    row = {"variant": variant, "client lr": f"{lr:g}", "runs": len(g)}
    if not len(g):  # every run of the cell diverged
        return row
    for title, event in EVENTS:
        row[title] = stats.fmt_km(stats.km_median(*stats.survival_data(g, event)))
    row["IQM final return [95% CI]"] = stats.fmt_iqm(stats.iqm_ci(g["final_return"].to_numpy(float)))
    row["|out| > 0.9 (last 20)"] = f"{np.nanmean(f['out_gt09_final']):.2f}"
    row["exactly saturated (last 20)"] = f"{np.nanmean(f['sat_exact_final']):.2f}"
    row["largest |z|"] = f"{np.nanmax(f['z_absmax']):.3g}"
    row["gradient: flowing / saturated / no path (last 20)"] = " / ".join(
        f"{np.nanmean(c[col]):.2f}" for _, col in ATTRIBUTION
    )
    return row


def cell_rows(
    store: ArchiveStore, label: Callable[[pd.DataFrame], pd.Series], baseline: str = "baseline"
) -> pd.DataFrame:
    """One row per variant and client lr: stop medians (Kaplan-Meier), IQM final return, the
    actors' saturation and the attribution of their output gradients, over the runs that finished;
    where runs diverged, a column counts them (they are in no other column)."""
    runs = runs_frame(store)
    runs["variant"] = label(runs)
    facts = monitor_facts(store, runs).set_index("run_id")
    causes = attribution(store)
    rows = []
    for variant in ordered_variants(runs, baseline):
        for lr, cell in runs[runs["variant"] == variant].groupby("client_lr"):
            g = cell[cell["status"] == "done"]
            row = _cell_row(variant, lr, g, facts.reindex(g["run_id"]), causes.reindex(g["run_id"]))
            rows.append({**row, "diverged": len(cell) - len(g)})
    t = pd.DataFrame(rows)
    if len(t) and not t["diverged"].any():
        t = t.drop(columns="diverged")
    elif len(t):
        t.insert(3, "diverged", t.pop("diverged"))
    return t


def comparisons(
    store: ArchiveStore,
    label: Callable[[pd.DataFrame], pd.Series],
    baseline: str = "baseline",
    what: str = "variant",
) -> pd.DataFrame:
    """Each variant against the baseline, per client lr: the actors' stop (log-rank on the
    all-actors-stop episodes, runs that never stop censored) and the final return (probability of
    improvement with its Mann-Whitney p); Holm over the table's whole family of tests. Runs that
    finished only: a cell whose runs all diverged has no row."""
    runs = runs_frame(store)
    runs = runs[runs["status"] == "done"]
    runs["variant"] = label(runs)
    base = runs[runs["variant"] == baseline]
    rows = []
    for variant in ordered_variants(runs, baseline)[len(base) > 0 :]:
        for lr, cell in runs[runs["variant"] == variant].groupby("client_lr"):
            b = base[base["client_lr"] == lr]
            stop = claims.compare_stops(cell, b, "all_actors_stop_thr")
            ret = claims.compare_returns(cell["final_return"], b["final_return"])
            rows.append({"variant": variant, "client lr": f"{lr:g}", "n": f"{len(cell)} vs {len(b)}",
                         "_stop": stop, "_ret": ret,
                         f"P({what} return > baseline) [CI]": f"{ret.effect.value:.2f} [{ret.effect.ci_low:.2f}, {ret.effect.ci_high:.2f}]"})  # fmt: skip
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    names = [(what, "baseline")] * len(t)
    vs = claims.family([*t["_stop"], *t["_ret"]], names=names + names)
    t["actors' stop vs baseline (log-rank)"] = [v.brief for v in vs[: len(t)]]
    t["final return vs baseline (Mann-Whitney)"] = [v.brief for v in vs[len(t) :]]
    return t.drop(columns=["_stop", "_ret"])


def seeds_and_episodes(runs: pd.DataFrame) -> tuple[str, str]:
    seeds = "; ".join(
        f"{sweep}: {', '.join(str(int(x)) for x in sorted(g['cfg.seed'].unique()))}"
        for sweep, g in runs.groupby("sweep_dir")
    )
    done = runs[runs["status"] == "done"]  # a diverged run ends early: its episodes are no design
    return seeds, ", ".join(str(int(x)) for x in sorted(done["episodes_done"].unique()))


STATS_TEXT = (
    "Each stop entry: Kaplan-Meier median episode (runs with the event / runs); 'never (0/n by episode "
    "E)': no run had it by its last episode E. Final return: mean evaluation return of the last 100 "
    "episodes, IQM over the runs with a 95% stratified-bootstrap CI (n per cell as given: a screen, not "
    "a test; with 2 runs the CI spans the two values). |out| > 0.9 and exactly saturated: fractions of "
    "actor outputs (exact: zero derivative), mean of the last 20 measured episodes; largest |z|: the "
    "largest output pre-activation of any actor in any episode. Gradient: the monitor's attribution of "
    "the actors' output gradients (`docs/monitor.md`): the fractions flowing, zero because the output "
    "is saturated, and zero because no gradient reaches the output from the loss (no path), mean of "
    "the last 20 episodes.\n"
)


DIVERGED_TEXT = (
    "diverged: runs of the cell whose training diverged (a non-finite critic loss, priority or action); "
    "they are archived with their episodes before the divergence, have no final return, and are in no "
    "other column or test.\n"
)


def comparison_text(what: str) -> str:
    return (
        f"Each {what} against the baseline, cell by cell: the actors' stop (log-rank test on the "
        "all-actors-stop episode, runs that never stop censored at their last episode; `lifelines`) and the "
        f"final return (probability that a {what} run beats a baseline run, with its bootstrap CI; "
        "`rliable`; two-sided Mann-Whitney test), with Holm's correction over all the tests of this table. "
        "Verdicts (`docs/report.md`, \"Verdicts\"): 'not detectable at n = a vs b' where the smallest p "
        "the design can give is not below 0.05 / m (m: the table's tests), whatever the data; 'not detected' "
        "where it could and did not (no test: no stop in either group): the data neither show nor exclude a "
        "difference.\n"
    )


MARKER = re.compile(r"(<!-- screen: ([\w, ]+) -->\n)(.*?)(<!-- /screen -->)", re.S)


def fill(path: Path, archives: list[str], cmd: str) -> int:
    """Replace the text between each ``<!-- screen: NAME[, NAME] -->`` and ``<!-- /screen -->`` of
    ``path`` with the tables of those screens (archives ``screen_<NAME>``; ``baseline``: the
    baseline alone) and, with a screen, its comparisons with the baseline. Returns the number of
    blocks filled; a block naming a screen whose archive is not given: one line, exit 2."""
    by_name = {Path(x).name: x for x in archives}
    text = path.read_text()
    named = {x.strip() for m in MARKER.finditer(text) for x in m.group(2).split(",")} - {"baseline"}
    missing = sorted(f"screen_{x}" for x in named if f"screen_{x}" not in by_name)
    if missing:
        print(f"screens_doc: --fill {path}: no archive given for {', '.join(missing)}", file=sys.stderr)
        sys.exit(2)

    def block(m: re.Match) -> str:
        names = [x.strip() for x in m.group(2).split(",") if x.strip() != "baseline"]
        sweeps = [by_name[BASELINE], *(by_name[f"screen_{x}"] for x in names)]
        store = ArchiveStore(sweeps)
        src = ", ".join(f"`results/{Path(x).name}`" for x in sweeps)
        parts = [f"*Generated from {src} by `{cmd}` (the command at the top of this page).*\n"]
        parts.append(md(cell_rows(store, variant_labels)))
        if names:
            parts += ["Against the baseline (Holm's correction over this table's tests):\n",
                      md(comparisons(store, variant_labels))]  # fmt: skip
        return m.group(1) + "\n".join(parts) + m.group(4)

    new, n = MARKER.subn(block, text)
    path.write_text(new)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archives", nargs="+", help=f"archives; the baseline's is named {BASELINE}")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screens.md"))
    ap.add_argument(
        "--fill", metavar="FILE", help="also fill FILE's <!-- screen: NAME --> blocks (docs/findings.md)"
    )
    a = ap.parse_args()
    store = ArchiveStore(a.archives)
    runs = runs_frame(store)
    if BASELINE not in set(runs["sweep_dir"]):
        print(
            f"screens_doc: archives: none is {BASELINE} (the baseline every screen is compared with)",
            file=sys.stderr,
        )
        sys.exit(2)
    if a.fill:
        cmd = "scripts/screens_doc.py --fill"
        print(f"filled {fill(Path(a.fill), a.archives, cmd)} block(s) of {a.fill}")
    seeds, n_ep = seeds_and_episodes(runs)
    cmd = "PYTHONPATH=src python scripts/screens_doc.py " + " ".join(a.archives) + f" --out {a.out}"
    text = [
        "# Screens of the mitigations and confounds (reduced design)\n",
        f'Generated by `{cmd}` from the archives named (`docs/run_store.md`, "The archive"); every number '
        "comes from those files. The runs: `bash scripts/run_screens.sh` (each experiment's config of "
        "`configs/mitigations/` and `configs/confounds/` on the client-lr slice at master lr 1e-3, "
        '`--seeds "[0, 1]"`, `training.episodes=300`, the simultaneous update except in the update-order '
        "confound, packs of runs), archived with `ccm-madrl archive sweeps/screen_<experiment> --out "
        "results/screen_<experiment>`; the baseline is `results/screen_baseline` (the published settings, "
        f"`docs/controls.md`). Seeds per archive: {seeds}; episodes per run: {n_ep}. A variant is what a "
        "run's config changes from the baseline's (fields besides the seed and the learning rates). This "
        "is a **screen**: the full design of each config is the 4x4 grid x 10 seeds x 2000 episodes in "
        "the published sequential order.\n",
        STATS_TEXT + (DIVERGED_TEXT if (runs["status"] == "diverged").any() else ""),
        md(cell_rows(store, variant_labels)),
        comparison_text("variant"),
        md(comparisons(store, variant_labels)),
    ]
    out = Path(a.out)
    out.write_text("\n".join(text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
