"""The report: the paper's tables and figures from any sweep(s), in one command.

``ccm-madrl report SWEEP_DIR [more dirs] [--out DIR]`` writes into DIR:
``report.md`` (tables and figure links), ``report.html`` (self-contained: figures embedded, inline
CSS, no external resource), ``tables/*.csv`` (every table), ``figures/*.png`` and ``*.pdf``,
``marl_eval.json`` (the runs in marl-eval's raw-data layout, ``report.export``).
See ``docs/report.md`` for how every number is computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..rundir import FINAL_EPISODES
from ..store import load
from . import claims, stats
from . import figures as figs
from .export import write_marl_eval
from .render import Section, html_page, markdown_page
from .tables import algorithm_table, runs_frame, table1, table2


@dataclass
class ReportResult:
    out_dir: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    excluded_runs: pd.DataFrame | None = None
    duplicates: pd.DataFrame | None = None
    title: str = ""
    marl_eval: Path | None = None  # the runs in marl-eval's raw-data JSON (report.export)


CAPTIONS = {
    "km_curves": "Kaplan-Meier estimates per cell: the fraction of runs in which the event has not happened by each episode; runs in which it never happened are censored at their last episode (tick marks). Counts: runs with the event / runs.",
    "performance_profiles": "Performance profiles (rliable): the fraction of a cell's runs whose final return exceeds tau, shaded: 95% stratified-bootstrap band; vertical lines: the non-learning baselines' returns (median over their seeds).",
    "interval_estimates": "Final return per cell (rliable): IQM, median and mean over the cell's runs with 95% stratified-bootstrap CIs (2000 replications, random state 0); cells of fewer than 2 runs left out.",
    "stop_heatmap": "Stopping episode of all actors per grid cell (top: exact criterion; bottom: thresholded); 'never' when no seed stopped, 'n/a' when the cell has no finished run, (k/n) when only k of n seeds stopped.",
    "agent_stop_distribution": "Per-agent stopping episodes: the fraction of all agents (of all runs with that client lr) stopped by each episode.",
    "learning_curves": "Evaluation return over episodes per cell, with the all-actors stopping episode marked.",
    "grad_norms": "Actor (mean over agents) and critic gradient norms and their ratio over episodes.",
    "layer_grad_norms": "Per-layer gradient norms of the actors (mean over agents) and the critic.",
    "saturation_over_time": "Fraction of the actors' outputs exactly saturated (derivative 0) and with |output| > 0.9.",
    "saturation_heatmap": "Final saturation (mean of the last 20 measured episodes) per grid cell.",
    "preactivations": "Statistics of the actors' output pre-activations over episodes.",
    "asymmetry_vs_stop": "Early actor/critic gradient-norm ratio against the all-actors stopping episode, one point per run; runs whose actors never all stopped are drawn in the shaded 'never' band above the last episode (censored).",
    "reward_at_stop": "Evaluation return when all actors stopped against the final return.",
    "sweep_comparison": "Sweeps side by side: stopping heatmaps and final returns with 95% CIs.",
    "algorithm_comparison": "Algorithms side by side: evaluation return over episodes.",
}


def _provenance(store, runs: pd.DataFrame, command: str) -> pd.DataFrame:
    done, diverged = (runs["status"] == "done").sum(), (runs["status"] == "diverged").sum()
    rows = [("command", command), ("runs", f"{len(runs)} ({done} finished, {diverged} diverged)")]
    for col, label in (
        ("prov.version", "package versions"),
        ("prov.commit", "source commits"),
        ("prov.dirty", "uncommitted changes"),
        ("prov.rng_mode", "RNG modes"),
        ("prov.actor_update", "actor update orders"),
        ("prov.device", "devices"),
        ("prov.torch", "torch versions"),
        ("cfg.seed", "seeds"),
    ):
        if col in runs:
            vals = sorted({str(v) for v in runs[col].dropna()})
            rows.append((label, ", ".join(vals[:20]) + (" ..." if len(vals) > 20 else "")))
    cfg_cols = [c for c in runs.columns if c.startswith("cfg.") and c != "cfg.seed"]
    varying = [c for c in cfg_cols if runs[c].astype(str).nunique() > 1]
    rows.append(("config fields that vary", ", ".join(varying) or "none"))
    shared = {c[4:]: runs[c].iloc[0] for c in cfg_cols if c not in varying and len(runs)}
    rows.append(("config shared by all runs", "; ".join(f"{k}={v}" for k, v in shared.items())))
    return pd.DataFrame(rows, columns=["item", "value"])


class _Progress:
    """Stage lines ``report: <stage> (<seconds since the start> s)`` for a terminal or a log (the
    report of a grid takes about a minute); silent without a writer."""

    def __init__(self, write=None):
        self.write, self.t0 = write, time.perf_counter()

    def __call__(self, stage: str) -> None:
        if self.write is not None:
            self.write(f"report: {stage} ({time.perf_counter() - self.t0:.1f} s)")


def build_report(
    paths, out_dir: str | Path | None = None, command: str | None = None, progress=None
) -> ReportResult:
    """Build the report of one or more sweep (or run) directories (``progress``: a callable that
    takes one line per stage, e.g. ``print``; None: silent)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    say = _Progress(progress)
    store = load(paths)
    out = Path(out_dir) if out_dir else Path("reports") / "-".join(Path(p).name for p in paths)
    all_runs = runs_frame(store)  # reads every run's config: a refused one leaves no report directory
    say(f"loaded {len(all_runs)} runs from {len(paths)} director{'y' if len(paths) == 1 else 'ies'}")  # after its checks
    (out / "tables").mkdir(parents=True, exist_ok=True)
    runs = all_runs[all_runs["status"] == "done"] if len(all_runs) else all_runs
    excluded = (
        all_runs.loc[all_runs["status"] != "done", ["sweep", "run_id", "status", "episodes_done"]]
        if len(all_runs)
        else all_runs
    )
    command = command or " ".join(
        ["ccm-madrl report", *map(str, paths), *(["--out", str(out)] if out_dir else [])]
    )
    title = report_title(store, paths)
    res = ReportResult(out, excluded_runs=excluded, duplicates=store.duplicates, title=title)
    say(f"tables of {len(runs)} finished runs")
    t1_num, t1_txt = table1(store)
    at_num, at_txt = algorithm_table(store)
    t2 = table2(store)
    prov = _provenance(store, all_runs, command)
    res.tables = {
        "table1": t1_num,
        "table2": t2,
        "algorithms": at_num,
        "provenance": prov,
        "excluded_runs": excluded,
    }
    say("statistics (survival, log-rank, IQM, bootstrap CIs)")
    stat_sections = _statistics(runs, store, res)
    for name, df in res.tables.items():
        df.to_csv(out / "tables" / f"{name}.csv", index=False)
    res.figures, res.skipped = figs.make_all(runs, store, out / "figures", progress=say)
    res.marl_eval = write_marl_eval(runs, store.metrics, out / "marl_eval.json") if len(runs) else None
    window = final_window(runs)
    head = [
        Section("Table 1: stopping and final return per grid cell", t1_txt,
                "Stop episodes: mean ± 95% CI over the seeds in which the event happened, (k/n) when only k of n seeds; "
                f"'never' when none. Final return: {window}, mean ± 95% CI (Student t) over seeds."),
        Section("Table 2: architectures (computed from the instantiated networks)", t2),
        *stat_sections,
    ]  # fmt: skip
    tail = _tail_sections(res, runs, at_txt, store, window) + [Section("Provenance", prov)]
    args = (title, command, head + tail, res.figures, CAPTIONS, len(head))
    (out / "report.md").write_text(markdown_page(*args))
    (out / "report.html").write_text(html_page(*args))
    say(f"written: {out}")
    return res


def report_title(store, paths) -> str:
    """The sweeps' own names (manifest / sweep.yaml), not the folders'; for standalone runs (no
    sweep name) the names of the run directories given."""
    names = [n for n in store.sweep_names if n]
    return ", ".join(names) if names else ", ".join(Path(p).resolve().name for p in paths)


def final_window(runs: pd.DataFrame) -> str:
    """What the final return averages, as the runs have it: the last 100 evaluations, or fewer
    where a run has fewer (``final_evals``: the evaluations it averages)."""
    n = pd.to_numeric(runs["final_evals"], errors="coerce").dropna() if "final_evals" in runs else pd.Series()
    if n.empty or (n >= FINAL_EPISODES).all():
        return f"mean of the last {FINAL_EPISODES} evaluations" + ("" if len(n) else " (or all, where fewer)")
    lo, hi = int(n.min()), int(n.max())
    return f"mean of the last {FINAL_EPISODES} evaluations, or all where fewer (here {lo}" + (
        f" to {hi})" if hi != lo else ")"
    )


def _tail_sections(res: ReportResult, runs, at_txt, store, window: str) -> list[Section]:
    out = []
    if len(at_txt) and runs["algorithm"].nunique() > 1:
        out.append(Section("Algorithms: final return and constraint violations", at_txt,
                           "Constraint violation: fraction of evaluation steps whose proposals exceeded the server's "
                           f"limits ({window.replace('mean of', 'mean over')})."))  # fmt: skip
    if res.excluded_runs is not None and len(res.excluded_runs):
        out.append(Section(
            "Runs not included (not finished, or diverged)", res.excluded_runs,
            "Missing grid cells are marked 'n/a' in the figures. A diverged run (training stopped at a "
            "non-finite loss, priority or action, in the episode after its episodes_done) is a result: "
            "Table 1 counts it in its cell's 'diverged' column; it has no final return.",
        ))  # fmt: skip
    if len(store.duplicates):
        out.append(Section("Duplicate runs ignored", store.duplicates,
                           "Copies of one run (same config id, seed included) count once: the most advanced copy is kept."))  # fmt: skip
    if res.skipped:
        out.append(Section("Figures not drawn", pd.DataFrame(sorted(res.skipped.items()), columns=["figure", "reason"])))
    return out


def _statistics(runs: pd.DataFrame, store, res: ReportResult) -> list[Section]:
    """The statistics sections (``report.stats``): survival of the stop events, log-rank tests,
    IQM and probability of improvement; their tables join ``res.tables``."""
    if runs.empty:
        return []
    surv = stats.survival_table(runs)
    lr = claims.logrank_table(runs)
    iq, poi = claims.returns_table(runs, store.baselines)
    res.tables.update(survival=surv, logrank=lr, returns_iqm=iq, probability_of_improvement=poi)
    for name in ("survival", "logrank", "returns_iqm", "probability_of_improvement"):
        res.tables[name].to_csv(res.out_dir / "tables" / f"{name}.csv", index=False)
    cells = stats.CELL
    s_txt = surv.assign(value=[stats.fmt_km(r) for r in surv.to_dict("records")])
    s_txt = s_txt.pivot_table(index=cells, columns="label", values="value", aggfunc="first", sort=True)
    s_txt = s_txt[[v for v in stats.EVENTS.values() if v in s_txt.columns]].reset_index()
    i_txt = iq.assign(**{"final return IQM [95% CI]": [stats.fmt_iqm(r) for r in iq.to_dict("records")]})
    i_txt = i_txt[cells + ["final return IQM [95% CI]"]]
    if len(poi):
        p_txt = poi.assign(
            comparison=poi["baseline"].map(lambda b: stats.BASELINE_LABELS.get(b, b)),
            value=[f"{r['poi']:.2f}" + (f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if np.isfinite(r["ci_low"]) else "")
                   + f", δ = {r['cliffs_delta']:+.2f}; {r['verdict_brief']}" for r in poi.to_dict("records")],
        ).pivot_table(index=cells, columns="comparison", values="value", aggfunc="first", sort=True)  # fmt: skip
        i_txt = i_txt.merge(
            p_txt.add_prefix("P(better than ").add_suffix(")").reset_index(), on=cells, how="left"
        )
    lr_txt = (
        lr.reindex(columns=["sweep", "steps", "compared", "a", "b", "master_lr", "client_lr", "n_a", "n_b", "median_a", "median_b", "stopped_a", "stopped_b", "verdict"])
        .round({"stopped_a": 2, "stopped_b": 2}) if len(lr) else lr
    )  # fmt: skip
    return [
        Section("Statistics: stop episodes as survival data (Kaplan-Meier median [95% CI])", s_txt,
         "Runs in which an event did not happen are censored at their last episode. 'not reached': fewer than half "
         "the runs had the event, so the median is not estimable; the CI bound ∞ means not bounded within the runs. "
         "Method: docs/report.md, 'Statistics'; numbers: tables/survival.csv."),
        Section("Statistics: log-rank tests between adjacent learning rates (all actors stopped, |dw| < threshold)", lr_txt,
         "One family per sweep (every adjacent client-lr pair at each master lr and master-lr pair at each client lr), "
         "Holm-corrected; a = the lower learning rate. Verdicts (docs/report.md, 'Verdicts'): 'not detectable at n = a vs b' "
         "where the smallest p the design can give is not below alpha / m (m tests in the family), whatever the data; "
         "'not detected' where the design could detect and the adjusted p is >= 0.05 (the data neither show nor exclude a "
         "difference). The hazard ratio a / b (Peto) is the effect size. tables/logrank.csv (raw and adjusted p, the design's "
         "smallest attainable p)."),
        Section("Statistics: final return (IQM, probability of improvement over the baselines)", i_txt,
         "IQM: mean of the middle 50% of the runs' final returns, 95% stratified-bootstrap CI (rliable, 2000 "
         "replications, seed 0). P(better than ...): probability that a run of the cell beats a run of the baseline "
         "[bootstrap CI], δ: Cliff's delta (2P - 1), then the verdict of the two-sided Mann-Whitney test, Holm over the sweep's "
         "comparisons (docs/report.md, 'Verdicts': 'not detectable at n = a vs b' where the design's smallest p, "
         "2 / C(a + b, a), is not below alpha / m). tables/returns_iqm.csv, tables/probability_of_improvement.csv."
         + _missing_baselines(store)),
    ]  # fmt: skip


MISSING_BASELINES = (
    " The non-learning baselines' returns are missing (not compared): they are written when a sweep is archived "
    "(`ccm-madrl archive`, unless --no-baselines); the report reads them and never runs them."
)


def _missing_baselines(store) -> str:
    """One line where the runs' store holds no baselines (run directories, or an archive written
    without them): the report does not compute them."""
    return MISSING_BASELINES if not len(store.baselines) else ""


__all__ = ["build_report", "ReportResult"]
