"""The report's statistics (``docs/report.md``, "Statistics"): stop episodes as survival data and
final returns as the reliable-RL literature summarises them, with ``lifelines``, ``rliable`` and
``statsmodels`` (core dependencies).

Stop episodes (per run: ``all_actors_stop_thr`` etc., ``monitor.stops``) are time-to-event data: a
run whose actors never stop is *censored* at its last episode (it might stop later), so a mean
over the runs that happened to stop is biased. Per cell:

- Kaplan-Meier estimate of the fraction of runs not yet stopped at each episode
  (``lifelines.KaplanMeierFitter``, product-limit; censored runs leave the risk set after their
  last episode), its median (the first event episode with S(t) <= 1/2, S computed exactly in
  fractions: lifelines' float S stores an exact 1/2 as 0.5000000000000001 and its
  ``median_survival_time_`` then moves to the next event) with a 95% CI (the same rule on the
  pointwise exponential-Greenwood band, to within ``CI_TOL``); "not reached" when fewer than half
  the runs stopped;
- log-rank tests between cells (``lifelines.statistics.logrank_test``), Holm's correction over a
  family of tests (``statsmodels`` ``multipletests``).

Final returns (mean of the last 100 evaluations), per cell, with ``rliable``:

- interquartile mean (IQM: ``scipy.stats.trim_mean(x, 0.25)``, the mean of the middle 50% of the
  runs) with a 95% stratified-bootstrap percentile CI (one task: a bootstrap over runs);
- probability of improvement P(X > Y) of the cell's runs over a baseline's (Mann-Whitney U / (n_x
  n_y); ties count 1/2) with a bootstrap CI, its two-sided Mann-Whitney p-value and Cliff's delta
  2 P - 1 as the effect size, against the all-local heuristic, random selection (both: runs of the
  non-learning baselines on the same environment, ``ccm_madrl.archive``) and the untrained policy
  (the runs' own first evaluation);
- performance profiles: the fraction of runs whose return exceeds tau, over tau.

Verdicts (which comparison is a finding, the design's smallest attainable p, the code versions)
and the report's comparison tables (``logrank_table``, ``returns_table``): ``report.claims``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd

ALPHA = 0.05
REPS = 2000  # bootstrap replications
SEED = 0  # the bootstrap's random state: the report is reproducible


@contextlib.contextmanager
def _bootstrap_rng():
    """rliable's stratified bootstrap draws its indices from NumPy's GLOBAL generator
    (``np.random.choice`` in ``StratifiedBootstrap.update_indices``; the ``random_state`` it is given
    does not reach those draws), so a CI changed from one call to the next. Seed the global
    generator with SEED for the call and restore the caller's state afterwards. Also silences
    arch's "random_state is deprecated" (rliable passes one) for the call."""
    state = np.random.get_state()  # noqa: NPY002 - the global generator is what rliable draws from
    np.random.seed(SEED)  # noqa: NPY002
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield np.random.RandomState(SEED)
    finally:
        np.random.set_state(state)  # noqa: NPY002


# the run-level events analysed as survival data: column -> label
EVENTS = {
    "all_actors_stop_thr": "all actors stopped (|dw| < threshold)",
    "first_actor_stop_thr": "first actor stopped (|dw| < threshold)",
    "all_actors_stop_exact": "all actors stopped (exact)",
    "all_actors_grad_zero": "all actors' gradient exactly 0",
    "critic_stop_thr": "critic stopped (|dw| < threshold)",
}
BASELINE_LABELS = {
    "all_local": "all-local heuristic",
    "random_selection": "random selection",
    "untrained": "untrained policy",
}


def survival_data(runs: pd.DataFrame, event: str) -> tuple[np.ndarray, np.ndarray]:
    """(durations, observed) of ``event`` per run: the event's episode, or the run's last episode
    (``episodes_done - 1``) when it did not happen (censored)."""
    last = runs["episodes_done"].to_numpy(dtype=float) - 1
    ev = runs[event].to_numpy(dtype=float) if event in runs else np.full(len(runs), np.nan)
    observed = np.isfinite(ev)
    return np.where(observed, ev, last), observed


def kaplan_meier(durations, observed):
    from lifelines import KaplanMeierFitter

    return KaplanMeierFitter(alpha=ALPHA).fit(np.asarray(durations, float), np.asarray(observed, bool))


def km_survival_exact(durations, observed) -> list[tuple[float, Fraction]]:
    """The product-limit estimate at each event episode, exactly: [(t_i, S(t_i))] with S(t_i) =
    prod over t_j <= t_i of (1 - d_j / n_j) as a ``Fraction`` (d_j runs with the event at t_j, n_j
    runs with duration >= t_j: a run censored at t_j is still at risk there, as in lifelines)."""
    durations, observed = np.asarray(durations, float), np.asarray(observed, bool)
    s, out = Fraction(1), []
    for t in np.unique(durations[observed]):
        s *= 1 - Fraction(int((observed & (durations == t)).sum()), int((durations >= t).sum()))
        out.append((float(t), s))
    return out


def first_at_or_below_half(curve: pd.Series, tol: float = 0.0) -> float:
    """The first index t of a (step) curve with curve(t) <= 1/2 + tol; inf when it never gets there."""
    hit = curve.to_numpy(float) <= 0.5 + tol
    return float(curve.index[hit.argmax()]) if hit.any() else math.inf


# The CI band is lifelines' float computation (logs and exponentials): a bound at 1/2 in exact
# arithmetic can come out a few ulps above it, so "<= 1/2" is read to within this tolerance (many
# orders of magnitude above float rounding, far below the band's steps from one event to the next).
CI_TOL = 1e-9


def km_median(durations, observed) -> dict:
    """The Kaplan-Meier median (inf: not reached) with its 95% CI, and the counts.

    The median is the first event episode t with S(t) <= 1/2 (docs/report.md), S computed exactly
    (``km_survival_exact``): at an exact 1/2 (e.g. 6 runs, 3 events) lifelines' float S is
    0.5000000000000001 and its ``median_survival_time_`` moves to the next event (or to "not
    reached"). The CI bounds are the first episodes at which the pointwise exponential-Greenwood
    band's lower / upper curve (``KaplanMeierFitter.confidence_interval_``) is <= 1/2 + ``CI_TOL``;
    inf when the curve stays above 1/2 within the runs."""
    durations, observed = np.asarray(durations, float), np.asarray(observed, bool)
    n, k = len(durations), int(observed.sum())
    if n == 0:
        return {"n": 0, "events": 0, "median": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    median = next((t for t, s in km_survival_exact(durations, observed) if s <= Fraction(1, 2)), math.inf)
    band = kaplan_meier(durations, observed).confidence_interval_
    return {
        "n": n,
        "events": k,
        "censored_at": float(durations[~observed].max()) if k < n else math.nan,
        "median": float(median),
        "ci_low": first_at_or_below_half(band.iloc[:, 0], CI_TOL),
        "ci_high": first_at_or_below_half(band.iloc[:, 1], CI_TOL),
    }


def fmt_km(row: dict) -> str:
    """'median [CI low, high] (k/n)'; 'not reached (k/n stopped by episode E)' when fewer than half
    stopped; 'never (0/n by episode E)'."""
    n, k = row["n"], row["events"]
    if n == 0:
        return "n/a"
    if k == 0:
        return f"never (0/{n} by episode {row['censored_at']:.0f})"
    if not np.isfinite(row["median"]):
        return f"not reached ({k}/{n} stopped by episode {row['censored_at']:.0f})"

    def f(v):
        return "∞" if not np.isfinite(v) else f"{v:.0f}"

    ci = f" [{f(row['ci_low'])}, {f(row['ci_high'])}]" if n > 1 else ""
    return f"{row['median']:.0f}{ci} ({k}/{n})"


def logrank(runs_a: pd.DataFrame, runs_b: pd.DataFrame, event: str) -> dict:
    from lifelines.statistics import logrank_test

    da, ea = survival_data(runs_a, event)
    db, eb = survival_data(runs_b, event)
    if len(da) == 0 or len(db) == 0 or (ea.sum() + eb.sum()) == 0:
        return {"statistic": math.nan, "p": math.nan}
    r = logrank_test(da, db, ea, eb)
    return {"statistic": float(r.test_statistic), "p": float(r.p_value)}


def holm(p: pd.Series) -> pd.Series:
    """Holm-adjusted p-values over the finite entries (NaN stays NaN)."""
    from statsmodels.stats.multitest import multipletests

    out = pd.Series(np.nan, index=p.index, dtype=float)
    ok = p.notna()
    if ok.any():
        out[ok] = multipletests(p[ok].to_numpy(float), alpha=ALPHA, method="holm")[1]
    return out


# ----------------------------------------------------------------------------- returns (rliable)
def iqm(x) -> float:
    from rliable import metrics

    x = np.asarray(x, float)
    return float(metrics.aggregate_iqm(x.reshape(-1, 1))) if len(x) else math.nan


def iqm_ci(x, reps: int = REPS) -> dict:
    """IQM of the runs' scores with a 95% stratified-bootstrap CI (rliable; NaN CI for n < 2)."""
    from rliable import library as rly
    from rliable import metrics

    x = np.asarray([v for v in x if np.isfinite(v)], float)
    n = len(x)
    if n == 0:
        return {"n": 0, "iqm": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n < 2 or np.all(x == x[0]):
        return {
            "n": n,
            "iqm": iqm(x),
            "ci_low": math.nan if n < 2 else x[0],
            "ci_high": math.nan if n < 2 else x[0],
        }
    with _bootstrap_rng() as rs:
        point, ci = rly.get_interval_estimates(
            {"x": x.reshape(-1, 1)},
            lambda s: np.array([metrics.aggregate_iqm(s)]),
            reps=reps,
            random_state=rs,
        )
    return {
        "n": n,
        "iqm": float(point["x"][0]),
        "ci_low": float(ci["x"][0, 0]),
        "ci_high": float(ci["x"][1, 0]),
    }


def probability_of_improvement(x, y, reps: int = REPS) -> dict:
    """P(X > Y) (rliable), its bootstrap CI, the two-sided Mann-Whitney p-value and Cliff's delta."""
    from rliable import library as rly
    from rliable import metrics
    from scipy.stats import mannwhitneyu

    x = np.asarray([v for v in x if np.isfinite(v)], float)
    y = np.asarray([v for v in y if np.isfinite(v)], float)
    if len(x) == 0 or len(y) == 0:
        return {
            "poi": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p": math.nan,
            "cliffs_delta": math.nan,
        }
    poi = float(metrics.probability_of_improvement(x.reshape(-1, 1), y.reshape(-1, 1)))
    lo = hi = math.nan
    if len(x) > 1 and len(y) > 1:
        with _bootstrap_rng() as rs:
            _, ci = rly.get_interval_estimates(
                {"xy": [x.reshape(-1, 1), y.reshape(-1, 1)]},
                lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
                reps=reps,
                random_state=rs,
            )
        lo, hi = float(ci["xy"][0, 0]), float(ci["xy"][1, 0])
    p = float(mannwhitneyu(x, y, alternative="two-sided").pvalue) if not np.array_equal(x, y) else 1.0
    return {"poi": poi, "ci_low": lo, "ci_high": hi, "p": p, "cliffs_delta": 2 * poi - 1}


def performance_profile(
    scores: dict[str, np.ndarray], taus: np.ndarray, reps: int = REPS
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The fraction of runs with a score above each tau (rliable's score distribution) and its 95%
    stratified-bootstrap band (``reps`` replications, random state SEED); a cell of one run gets its
    step function as its band."""
    from rliable import library as rly

    scores = {k: np.asarray(v, float).reshape(-1, 1) for k, v in scores.items() if len(v)}
    with _bootstrap_rng():
        return rly.create_performance_profile(scores, taus, reps=reps)


def interval_estimates(scores: dict[str, np.ndarray], reps: int = REPS) -> tuple[dict, dict, list[str]]:
    """IQM, median and mean of each group's scores with 95% stratified-bootstrap CIs (rliable's
    ``get_interval_estimates``, random state SEED): (points, intervals, metric names), as
    ``rliable.plot_utils.plot_interval_estimates`` takes them. Groups with fewer than 2 finite
    scores are left out (no interval)."""
    from rliable import library as rly
    from rliable import metrics

    names = ["IQM", "median", "mean"]

    def agg(s):  # over runs (rliable's aggregate_median is a median over tasks of run means)
        return np.array([metrics.aggregate_iqm(s), np.median(s), np.mean(s)])

    scores = {k: np.asarray([v for v in x if np.isfinite(v)], float) for k, x in scores.items()}
    scores = {k: x.reshape(-1, 1) for k, x in scores.items() if len(x) > 1}
    if not scores:
        return {}, {}, names
    with _bootstrap_rng() as rs:
        points, cis = rly.get_interval_estimates(scores, agg, reps=reps, random_state=rs)
    return points, cis, names


# ----------------------------------------------------------------------------- report tables
CELL = ["sweep", "algorithm", "client_lr", "master_lr", "steps"]


def survival_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, event): n, events, KM median and its CI."""
    rows = []
    for key, g in runs.groupby(CELL, sort=True):
        for event, label in EVENTS.items():
            d, e = survival_data(g, event)
            rows.append({**dict(zip(CELL, key)), "event": event, "label": label, **km_median(d, e)})
    return pd.DataFrame(rows)


def fmt_iqm(row) -> str:
    if row["n"] == 0:
        return "n/a"
    ci = f" [{row['ci_low']:.1f}, {row['ci_high']:.1f}]" if np.isfinite(row["ci_low"]) else ""
    return f"{row['iqm']:.1f}{ci} (n = {row['n']})"


def corrected_table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1 with survival statistics, one row per cell: Kaplan-Meier medians [95% CI] of the
    all-actors stop, the first actor's stop (both |dw| < threshold), the episode from which every
    actor's gradient is exactly 0 and the critic's stop; the IQM final return [95% CI]; the
    fraction of seeds in which all actors stopped. Numeric columns beside the formatted ones.
    Runs whose training diverged (status ``diverged``: no final return, no episodes after the
    divergence) are counted in ``diverged`` and left out of every other column."""
    rows = []
    for key, cell in runs.groupby(CELL, sort=True):
        g = cell[cell["status"] != "diverged"] if "status" in cell else cell
        row = dict(zip(CELL, key))
        row["runs"] = len(g)
        row["diverged"] = len(cell) - len(g)
        for event, label in (("all_actors_stop_thr", "all actors stop"), ("first_actor_stop_thr", "first actor stop"),
                             ("all_actors_grad_zero", "gradient exactly 0"), ("critic_stop_thr", "critic stop")):  # fmt: skip
            km = km_median(*survival_data(g, event))
            row[label] = fmt_km(km)
            row[f"{event}_median"], row[f"{event}_events"] = km["median"], km["events"]
        q = iqm_ci(g["final_return"].to_numpy(float))
        row["IQM final return"] = fmt_iqm(q)
        row["final_return_iqm"], row["final_return_ci_low"], row["final_return_ci_high"] = (
            q["iqm"],
            q["ci_low"],
            q["ci_high"],
        )
        k = int(g["all_actors_stop_thr"].notna().sum()) if "all_actors_stop_thr" in g else 0
        row["seeds all stopped"] = f"{k}/{len(g)}"
        rows.append(row)
    return pd.DataFrame(rows)
