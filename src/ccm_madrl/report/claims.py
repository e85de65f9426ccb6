"""Claims as code: the rules by which a comparison of runs becomes a verdict (``docs/report.md``,
"Verdicts"). Pure functions over arrays and runs frames (``report.tables.runs_frame``); the report's
statistics tables and ``scripts/table1_doc.py`` / ``scripts/screens_doc.py`` take their verdicts from
here.

The five verdicts (``LABELS``):

- ``holds``: the test is significant after Holm's correction over its family, in the claimed
  direction (or, for a claim that two groups differ, in either);
- ``holds only for `published_code: 44fba1b```: a claim evaluated per code version holds for the
  published-code preset and not for the default system (``across_versions``);
- ``contradicted``: significant, in the direction opposite to the claim;
- ``not detectable at n = a vs b``: the design cannot reach significance whatever the data: the
  smallest p the test can give at these group sizes (``min_attainable_p``) is not below the
  threshold of Holm's first step, alpha / m (m tests in the family). Decided before the test; no p
  is reported as a finding;
- ``not detected``: the design could have detected a difference and the test did not (Holm p >=
  alpha). The data neither show nor exclude a difference: never read as "no difference".

Every verdict carries an effect size with its CI beside the p: for final returns the probability of
improvement P(a > b) with its bootstrap CI (``stats.probability_of_improvement``); for stop episodes
the hazard ratio a / b (Peto's estimate from the log-rank quantities) with its 95% CI, and the two
Kaplan-Meier medians.

Runs of different code versions (``cfg.published_code``) are never pooled in one group
(``require_one_version``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import pandas as pd

from . import stats

ALPHA = stats.ALPHA
PUBLISHED = "44fba1b"
VERSION_FIELD = "cfg.published_code"

HOLDS = "holds"
HOLDS_ONLY_PUBLISHED = f"holds only for `published_code: {PUBLISHED}`"
CONTRADICTED = "contradicted"
NOT_DETECTED = "not detected"
NOT_DETECTABLE = "not detectable at n = {n_a} vs {n_b}"
LABELS = (HOLDS, HOLDS_ONLY_PUBLISHED, CONTRADICTED, NOT_DETECTABLE, NOT_DETECTED)

TESTS = {"mannwhitney": "Mann-Whitney", "logrank": "log-rank"}
# the composition search of the log-rank's most extreme outcome is exact up to this many runs in
# the group whose events come first (2^(n-1) outcomes); above it, an attainable p (an upper bound)
LOGRANK_EXACT_MAX = 14


def not_detectable(n_a: int, n_b: int) -> str:
    return NOT_DETECTABLE.format(n_a=n_a, n_b=n_b)


# ----------------------------------------------------------------------------- the design's limit
def min_attainable_p(test: str, n_a: int, n_b: int) -> float:
    """The smallest p-value ``test`` can give with groups of ``n_a`` and ``n_b`` runs, whatever the
    data: the p of the design's most extreme outcome.

    - ``"mannwhitney"`` (two-sided, exact): 2 / C(n_a + n_b, n_a), the two perfectly separated
      orderings out of all C(n_a + n_b, n_a) equally likely ones under the null; with ties the
      permutation distribution is coarser and its smallest p no smaller. The limit is the exact
      test's: at 8 runs or more, or with ties, scipy's ``mannwhitneyu`` reports a normal
      approximation, which at small n can fall below it (4 vs 4 with tied baselines: 0.021 against
      the exact 2/70 = 0.029); the rule does not credit that.
    - ``"logrank"`` (lifelines' chi-square log-rank test): the p that lifelines gives for the most
      extreme outcome. Searched, not assumed: every run of one group has its event before any run
      of the other has an event or is censored, the events of the first group falling in tie
      blocks of any sizes (all the compositions of its n). That family holds the largest statistic
      of all outcomes (checked against every outcome of small designs in ``tests/test_claims.py``);
      the all-tied outcome is not always the extreme one (2 vs 3: chi2 4.26 with the first group's
      two events apart and the other group still at risk, 4.00 tied). Exact while the first group
      has at most ``LOGRANK_EXACT_MAX`` runs; above, the best of the all-tied and all-distinct
      outcomes, an attainable p (so an upper bound of the minimum).
    """
    n_a, n_b = int(n_a), int(n_b)
    if n_a < 1 or n_b < 1:
        return math.nan
    if test == "mannwhitney":
        return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))
    if test == "logrank":
        return _logrank_min_p(n_a, n_b)
    raise ValueError(f"test: {test!r}, expected one of {sorted(TESTS)}")


def _compositions(n: int, exact: bool):
    """The tie-block sizes of n events in time order: all compositions of n (2^(n-1)), or only
    the all-tied and the all-distinct ones."""
    if not exact:
        yield (n,)
        yield (1,) * n
        return
    for cuts in itertools.product((False, True), repeat=n - 1):
        sizes, k = [], 1
        for cut in cuts:
            if cut:
                sizes.append(k)
                k = 1
            else:
                k += 1
        yield (*sizes, k)


def _separated_chi2(blocks: tuple[int, ...], n_second: int) -> float:
    """The log-rank chi-square of one group's events in ``blocks`` while the other group's
    ``n_second`` runs are all at risk."""
    o_e = v = 0.0
    left = sum(blocks)
    for d in blocks:
        n = left + n_second
        o_e += d - d * left / n
        v += left * n_second * d * (n - d) / (n * n * (n - 1)) if n > 1 else 0.0
        left -= d
    return o_e * o_e / v if v > 0 else 0.0


@cache
def _logrank_min_p(n_a: int, n_b: int) -> float:
    from lifelines.statistics import logrank_test

    best = (-1.0, None, 0, 0)
    for first, second in ((n_a, n_b), (n_b, n_a)):
        for blocks in _compositions(first, first <= LOGRANK_EXACT_MAX):
            chi2 = _separated_chi2(blocks, second)
            if chi2 > best[0]:
                best = (chi2, blocks, first, second)
    _, blocks, first, second = best
    # the outcome itself through lifelines: the first group's events at episodes 0, 1, ... by
    # block; the second group censored at the last of them (at risk at every one)
    t_first = np.repeat(np.arange(len(blocks), dtype=float), blocks)
    t_second = np.full(second, float(len(blocks) - 1))
    r = logrank_test(t_first, t_second, np.ones(first, bool), np.zeros(second, bool))
    return float(r.p_value)


def threshold(m: int, alpha: float = ALPHA) -> float:
    """Holm's first (strictest) threshold over a family of ``m`` tests."""
    return alpha / max(int(m), 1)


def detectable(test: str, n_a: int, n_b: int, m: int, alpha: float = ALPHA) -> bool:
    """Whether a test of this design can pass Holm's first step in a family of ``m`` tests: its
    smallest attainable p below alpha / m."""
    p = min_attainable_p(test, n_a, n_b)
    return bool(np.isfinite(p) and p < threshold(m, alpha))


# ----------------------------------------------------------------------------- the code versions
def versions(runs: pd.DataFrame) -> list[str | None]:
    """The code versions among ``runs`` (``cfg.published_code``; None: the default system)."""
    if VERSION_FIELD not in runs or not len(runs):
        return [None] if len(runs) else []
    vals = {None if pd.isna(v) else str(v) for v in runs[VERSION_FIELD]}
    return sorted(vals, key=lambda v: "" if v is None else v)


def require_one_version(runs: pd.DataFrame, what: str = "runs") -> str | None:
    """The one code version of ``runs``; ValueError when they mix ``cfg.published_code`` values
    (two systems, not one sample: evaluate each version on its own)."""
    vs = versions(runs)
    if len(vs) > 1:
        names = ", ".join("default" if v is None else v for v in vs)
        raise ValueError(
            f"{VERSION_FIELD}: {what} mix code versions ({names}); a verdict pools runs of one "
            "version only: evaluate each version on its own"
        )
    return vs[0] if vs else None


# ----------------------------------------------------------------------------- one comparison
@dataclass(frozen=True)
class Effect:
    """An effect size with its 95% CI (NaN bounds: none at these n)."""

    name: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    fmt: str = ".2g"

    def __str__(self) -> str:
        if not np.isfinite(self.value):
            return f"{self.name} n/a"
        f = self.fmt
        ci = f" [{self.ci_low:{f}}, {self.ci_high:{f}}]" if np.isfinite(self.ci_low) else ""
        return f"{self.name} {self.value:{f}}{ci}"


@dataclass(frozen=True)
class Comparison:
    """One test between groups a and b, before the family's correction. ``direction``: +1 when a
    lies above b (higher returns; for stops, a stops sooner: hazard ratio > 1), -1 below, 0 none."""

    test: str
    n_a: int
    n_b: int
    statistic: float
    p: float
    effect: Effect
    direction: int
    min_p: float
    what: str = "return"
    detail: str = ""


def _finite(x) -> np.ndarray:
    x = np.asarray(x, float)
    return x[np.isfinite(x)]


def compare_returns(x, y, reps: int = stats.REPS) -> Comparison:
    """Final returns of a (``x``) against b (``y``): two-sided Mann-Whitney p, P(a > b) with its
    bootstrap CI as the effect size."""
    x, y = _finite(x), _finite(y)
    r = stats.probability_of_improvement(x, y, reps=reps)
    poi = r["poi"]
    return Comparison(
        test="mannwhitney",
        n_a=len(x),
        n_b=len(y),
        statistic=poi * len(x) * len(y) if np.isfinite(poi) else math.nan,
        p=r["p"],
        effect=Effect("P(a > b)", poi, r["ci_low"], r["ci_high"], ".2f"),
        direction=0 if not np.isfinite(poi) else int(np.sign(poi - 0.5)),
        min_p=min_attainable_p("mannwhitney", len(x), len(y)),
        what="return",
        detail=f"Cliff's delta {r['cliffs_delta']:+.2f}" if np.isfinite(r["cliffs_delta"]) else "",
    )


def logrank_o_e_v(da, ea, db, eb) -> tuple[float, float]:
    """Group a's observed minus expected events and the variance of the two-group log-rank test
    (hypergeometric, ties as lifelines counts them): chi2 = (O - E)^2 / V."""
    d = np.r_[np.asarray(da, float), np.asarray(db, float)]
    e = np.r_[np.asarray(ea, bool), np.asarray(eb, bool)]
    in_a = np.r_[np.ones(len(da), bool), np.zeros(len(db), bool)]
    o_e = v = 0.0
    for t in np.unique(d[e]):
        at_risk = d >= t
        n, n1 = int(at_risk.sum()), int((at_risk & in_a).sum())
        dt = int(((d == t) & e).sum())
        o_e += int(((d == t) & e & in_a).sum()) - dt * n1 / n
        if n > 1:
            v += n1 * (n - n1) * dt * (n - dt) / (n * n * (n - 1))
    return o_e, v


def compare_stops(
    runs_a: pd.DataFrame, runs_b: pd.DataFrame, event: str = "all_actors_stop_thr"
) -> Comparison:
    """Stop episodes of ``event`` (runs without it censored at their last episode): lifelines'
    log-rank p; the hazard ratio a / b, exp((O - E) / V) with 95% CI exp((O - E) / V ± 1.96 /
    sqrt(V)) (Peto), as the effect size; the Kaplan-Meier medians in ``detail``. Each group must be
    of one code version."""
    require_one_version(runs_a, "group a")
    require_one_version(runs_b, "group b")
    da, ea = stats.survival_data(runs_a, event)
    db, eb = stats.survival_data(runs_b, event)
    lr = stats.logrank(runs_a, runs_b, event)
    o_e, v = logrank_o_e_v(da, ea, db, eb) if len(da) and len(db) else (math.nan, 0.0)
    if v > 0:
        z = 1.959963984540054 / math.sqrt(v)
        hr = Effect("hazard ratio a / b", math.exp(o_e / v), math.exp(o_e / v - z), math.exp(o_e / v + z))
    else:
        hr = Effect("hazard ratio a / b", math.nan)
    ka, kb = stats.km_median(da, ea), stats.km_median(db, eb)
    return Comparison(
        test="logrank",
        n_a=len(da),
        n_b=len(db),
        statistic=lr["statistic"],
        p=lr["p"],
        effect=hr,
        direction=int(np.sign(o_e)) if v > 0 else 0,
        min_p=min_attainable_p("logrank", len(da), len(db)),
        what="stop",
        detail=f"KM medians {stats.fmt_km(ka)} vs {stats.fmt_km(kb)}",
    )


def compare(a, b, what: str = "return", *, event: str = "all_actors_stop_thr", column: str = "final_return",
            reps: int = stats.REPS) -> Comparison:  # fmt: skip
    """a against b: ``what="return"`` (arrays of final returns, or runs frames whose ``column`` is
    taken) or ``what="stop"`` (runs frames; ``event``). Runs frames must each be of one version."""
    if what == "stop":
        return compare_stops(a, b, event)
    if what != "return":
        raise ValueError(f"what: {what!r}, expected 'return' or 'stop'")
    vals = []
    for x, name in ((a, "group a"), (b, "group b")):
        if isinstance(x, pd.DataFrame):
            require_one_version(x, name)
            x = x[column]
        vals.append(x)
    return compare_returns(*vals, reps=reps)


# ----------------------------------------------------------------------------- the verdicts
@dataclass(frozen=True)
class Verdict:
    """The verdict of one comparison in its family: ``label`` (one of ``LABELS``), the test and its
    statistic, the effect size with its CI, the raw and Holm-corrected p, the design's smallest
    attainable p and the threshold it faced (alpha / m), the groups' sizes, and ``text``: one line
    that never reads a non-detection as the absence of a difference (``brief``: the label and its
    p or limit only, for a table that shows the effect size in its own column)."""

    label: str
    test: str
    statistic: float
    effect: Effect
    p: float
    p_holm: float
    min_p: float
    threshold: float
    m: int
    n_a: int
    n_b: int
    direction: int
    text: str
    brief: str = ""

    @property
    def finding(self) -> bool:
        """Whether the verdict states a detected difference (holds / contradicted)."""
        return self.label in (HOLDS, HOLDS_ONLY_PUBLISHED, CONTRADICTED)


def _words(c: Comparison, names: tuple[str, str], direction: int) -> str:
    a, b = names
    if c.what == "stop":
        return f"{a} stops {'sooner' if direction > 0 else 'later'} than {b}"
    return f"{a} {'higher' if direction > 0 else 'lower'} than {b}"


def decide(c: Comparison, p_holm: float, m: int, expect: int = 0, names: tuple[str, str] = ("a", "b"),
           alpha: float = ALPHA) -> Verdict:  # fmt: skip
    """The verdict of comparison ``c`` with Holm-adjusted ``p_holm`` in a family of ``m`` tests.
    ``expect``: the claimed direction (+1: a above b, -1: below; 0: the claim that a and b
    differ). The design's limit comes first: a test whose smallest attainable p is not below
    alpha / m is "not detectable at n = a vs b", whatever its data."""
    thr = threshold(m, alpha)
    test = TESTS.get(c.test, c.test)
    n = f"n = {c.n_a} vs {c.n_b}"
    effect = f"{c.effect}" + (f"; {c.detail}" if c.detail else "")
    base = dict(test=c.test, statistic=c.statistic, effect=c.effect, p=c.p, p_holm=p_holm, min_p=c.min_p,
                threshold=thr, m=m, n_a=c.n_a, n_b=c.n_b, direction=c.direction)  # fmt: skip
    if not (np.isfinite(c.min_p) and c.min_p < thr):
        label = not_detectable(c.n_a, c.n_b)
        text = (f"{label}: the smallest p a {test} test can give at this n is {c.min_p:.2g}, not below Holm's "
                f"first threshold {alpha:g}/{m} = {thr:.2g}; effect size only: {effect}")  # fmt: skip
        brief = f"{label} (smallest attainable p {c.min_p:.2g} > {alpha:g}/{m})"
        return Verdict(label=label, text=text, brief=brief, **base)
    if not np.isfinite(c.p):
        why = "no run of either group had the event" if c.what == "stop" else "no values to compare"
        text = f"{NOT_DETECTED} at {n}: no test ({why}); the data neither show nor exclude a difference"
        return Verdict(label=NOT_DETECTED, text=text, brief=f"{NOT_DETECTED} at {n} (no test: {why})", **base)
    if p_holm < alpha and c.direction != 0:
        label = HOLDS if expect == 0 or expect == c.direction else CONTRADICTED
        claim = "" if label == HOLDS else f" (the claim: {_words(c, names, expect)})"
        text = (f"{label}: {_words(c, names, c.direction)}{claim} ({test} p = {c.p:.2g}, Holm p = {p_holm:.2g}, "
                f"m = {m}; {effect}; {n})")  # fmt: skip
        brief = f"{label}: {_words(c, names, c.direction)}{claim} (Holm p = {p_holm:.2g})"
        return Verdict(label=label, text=text, brief=brief, **base)
    text = (f"{NOT_DETECTED} at {n} (Holm p = {p_holm:.2g}, m = {m}; {effect}): the data neither show nor "
            "exclude a difference")  # fmt: skip
    return Verdict(
        label=NOT_DETECTED, text=text, brief=f"{NOT_DETECTED} at {n} (Holm p = {p_holm:.2g})", **base
    )


def family(comparisons: Sequence[Comparison], expect: int | Sequence[int] = 0,
           names: tuple[str, str] | Sequence[tuple[str, str]] = ("a", "b"), alpha: float = ALPHA) -> list[Verdict]:  # fmt: skip
    """The verdicts of one family of comparisons: Holm's correction over the tests with a p
    (``stats.holm``; m: their number), then ``decide`` for each."""
    comparisons = list(comparisons)
    k = len(comparisons)
    expects = [expect] * k if isinstance(expect, int) else list(expect)
    names_ = [names] * k if names and isinstance(names[0], str) else list(names)
    p = pd.Series([c.p for c in comparisons], dtype=float)
    adj = stats.holm(p)
    m = max(int(p.notna().sum()), 1)
    return [decide(c, float(q), m, e, nm, alpha) for c, q, e, nm in zip(comparisons, adj, expects, names_)]


def across_versions(by_version: Mapping[str | None, Verdict]) -> Verdict:
    """One claim evaluated per code version (keys: ``cfg.published_code`` values, None for the
    default system) as one verdict: "holds only for `published_code: 44fba1b`" when it holds
    there and not for the default system; otherwise the default system's verdict (its text
    naming the other version's label)."""
    default, published = by_version.get(None), by_version.get(PUBLISHED)
    if default is None and published is None:
        raise ValueError(f"{VERSION_FIELD}: no verdict for the default system or for {PUBLISHED}")
    if published is not None and published.label == HOLDS and (default is None or default.label != HOLDS):
        other = "" if default is None else f"; default system: {default.label}"
        return replace(published, label=HOLDS_ONLY_PUBLISHED, text=f"{HOLDS_ONLY_PUBLISHED}: {published.text}{other}",
                       brief=f"{HOLDS_ONLY_PUBLISHED}: {published.brief}{other}")  # fmt: skip
    if default is None:
        return replace(published, text=f"published_code {PUBLISHED} only: {published.text}",
                       brief=f"published_code {PUBLISHED} only: {published.brief}")  # fmt: skip
    if published is None:
        return default
    other = f"; published_code {PUBLISHED}: {published.label}"
    return replace(default, text=default.text + other, brief=default.brief + other)


def verdict_columns(verdicts: Sequence[Verdict]) -> dict[str, list]:
    """The columns a table adds for its verdicts."""
    return {
        "effect": [v.effect.name for v in verdicts],
        "effect_value": [v.effect.value for v in verdicts],
        "effect_ci_low": [v.effect.ci_low for v in verdicts],
        "effect_ci_high": [v.effect.ci_high for v in verdicts],
        "p_holm": [v.p_holm for v in verdicts],
        "m": [v.m for v in verdicts],
        "min_attainable_p": [v.min_p for v in verdicts],
        "threshold": [v.threshold for v in verdicts],
        "label": [v.label for v in verdicts],
        "verdict": [v.text for v in verdicts],
        "verdict_brief": [v.brief for v in verdicts],
    }


def _families(
    df: pd.DataFrame, comps: list[Comparison], by: list[str], names: list[tuple[str, str]]
) -> pd.DataFrame:
    """``df`` (one row per comparison, in ``comps``'s order) with the verdict columns, one Holm
    family per group of ``by``."""
    out = [None] * len(df)
    for _, idx in df.groupby(by, sort=False).indices.items():
        for i, v in zip(idx, family([comps[i] for i in idx], names=[names[i] for i in idx])):
            out[i] = v
    return df.assign(**verdict_columns(out))


# ----------------------------------------------------------------------------- the report's tables
def logrank_table(runs: pd.DataFrame, event: str = "all_actors_stop_thr") -> pd.DataFrame:
    """Log-rank tests of adjacent learning rates: client lr at each master lr, and master lr at
    each client lr (one family per sweep, algorithm and steps, Holm-corrected), each with its hazard
    ratio, KM medians and fractions of runs with the event, and its verdict."""
    rows, comps, names = [], [], []
    for (sweep, algo, steps), g in runs.groupby(["sweep", "algorithm", "steps"], sort=True):
        for vary, fixed in (("client_lr", "master_lr"), ("master_lr", "client_lr")):
            for fv, h in g.groupby(fixed, sort=True):
                levels = sorted(h[vary].unique())
                for a, b in zip(levels, levels[1:]):
                    ga, gb = h[h[vary] == a], h[h[vary] == b]
                    c = compare_stops(ga, gb, event)
                    ka, kb = (
                        stats.km_median(*stats.survival_data(ga, event)),
                        stats.km_median(*stats.survival_data(gb, event)),
                    )
                    rows.append({"sweep": sweep, "algorithm": algo, "steps": steps, "event": event,
                                 "compared": vary, fixed: fv, "a": a, "b": b, "n_a": len(ga), "n_b": len(gb),
                                 "median_a": ka["median"], "median_b": kb["median"],
                                 "stopped_a": ka["events"] / len(ga), "stopped_b": kb["events"] / len(gb),
                                 "statistic": c.statistic, "p": c.p})  # fmt: skip
                    comps.append(c)
                    label = vary.replace("_", " ")
                    names.append((f"{label} {a:g}", f"{label} {b:g}"))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return _families(df, comps, ["sweep", "algorithm", "steps"], names)


def returns_table(runs: pd.DataFrame, baselines: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(IQM per cell, probability of improvement per cell and baseline with its verdict, Holm over
    each sweep's family)."""
    iqms, pois, comps, names = [], [], [], []
    for key, g in runs.groupby(stats.CELL, sort=True):
        cell = dict(zip(stats.CELL, key))
        x = g["final_return"].to_numpy(float)
        iqms.append({**cell, **stats.iqm_ci(x), "mean": float(np.nanmean(x)) if len(x) else math.nan,
                     "median": float(np.nanmedian(x)) if len(x) else math.nan})  # fmt: skip
        b = baselines
        if len(b) and "sweep" in b:  # each archive's baselines (its own environment) for its runs
            b = b[b["sweep"].isin(set(g.get("sweep_dir", g["sweep"])))]
        comparisons = (
            {name: h["final_return"].to_numpy(float) for name, h in b.groupby("baseline")} if len(b) else {}
        )
        if "untrained_return" in g:
            comparisons["untrained"] = g["untrained_return"].to_numpy(float)
        require_one_version(g, "a cell's runs")
        for name, y in comparisons.items():
            c = compare_returns(x, y)
            comps.append(c)
            names.append(("the cell", stats.BASELINE_LABELS.get(name, name)))
            pois.append({**cell, "baseline": name, "n": c.n_a, "n_baseline": c.n_b,
                         "baseline_iqm": stats.iqm(_finite(y)), "poi": c.effect.value, "ci_low": c.effect.ci_low,
                         "ci_high": c.effect.ci_high, "p": c.p, "cliffs_delta": 2 * c.effect.value - 1})  # fmt: skip
    poi = pd.DataFrame(pois)
    if len(poi):
        poi = _families(poi, comps, ["sweep", "algorithm", "steps"], names)
    return pd.DataFrame(iqms), poi


__all__ = [
    "ALPHA",
    "LABELS",
    "HOLDS",
    "HOLDS_ONLY_PUBLISHED",
    "CONTRADICTED",
    "NOT_DETECTED",
    "NOT_DETECTABLE",
    "Effect",
    "Comparison",
    "Verdict",
    "min_attainable_p",
    "threshold",
    "detectable",
    "versions",
    "require_one_version",
    "compare",
    "compare_returns",
    "compare_stops",
    "logrank_o_e_v",
    "decide",
    "family",
    "across_versions",
    "not_detectable",
    "verdict_columns",
    "logrank_table",
    "returns_table",
]
