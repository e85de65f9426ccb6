"""The verdict rules (``ccm_madrl.report.claims``, docs/report.md "Verdicts") on crafted data and
on the committed tiny archive."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from ccm_madrl.report import claims

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "tests" / "data" / "archive_tiny"


def runs(stops, last=99, version=None, returns=None) -> pd.DataFrame:
    """A runs frame: each run's all-actors stop episode (None: never, censored at ``last``)."""
    n = len(stops)
    return pd.DataFrame({
        "all_actors_stop_thr": [np.nan if s is None else float(s) for s in stops],
        "episodes_done": [last + 1] * n,
        "final_return": returns if returns is not None else np.zeros(n),
        "cfg.published_code": [version] * n if isinstance(version, (str, type(None))) else version,
    })  # fmt: skip


def one(comparison, expect=0, names=("a", "b")) -> claims.Verdict:
    return claims.family([comparison], expect=expect, names=names)[0]


def test_the_vocabulary_is_the_five_verdicts():
    assert claims.LABELS == ("holds", "holds only for `published_code: 44fba1b`", "contradicted",
                             "not detectable at n = {n_a} vs {n_b}", "not detected")  # fmt: skip
    assert claims.not_detectable(2, 3) == "not detectable at n = 2 vs 3"


# ----------------------------------------------------------------------------- the design's limit
@pytest.mark.parametrize("n_a,n_b", [(1, 1), (1, 4), (2, 2), (2, 3), (3, 5), (4, 4), (6, 7), (10, 10)])
def test_min_attainable_p_of_mann_whitney_is_scipys_exact_p_of_separated_samples(n_a, n_b):
    x, y = np.arange(n_a) + 1000.0, np.arange(n_b, dtype=float)
    exact = mannwhitneyu(x, y, alternative="two-sided", method="exact").pvalue
    assert claims.min_attainable_p("mannwhitney", n_a, n_b) == pytest.approx(exact, rel=1e-12)
    assert claims.min_attainable_p("mannwhitney", n_b, n_a) == pytest.approx(exact, rel=1e-12)
    # and no ordering of the pooled ranks gives a smaller exact p (2 vs 2, 2 vs 3: every split)
    if n_a + n_b <= 5:
        pooled = np.arange(n_a + n_b, dtype=float)
        for idx in itertools.combinations(range(n_a + n_b), n_a):
            a = pooled[list(idx)]
            b = np.delete(pooled, list(idx))
            assert mannwhitneyu(a, b, method="exact").pvalue >= exact - 1e-15


def test_the_worked_example_two_vs_two():
    assert (
        claims.min_attainable_p("mannwhitney", 2, 2)
        == pytest.approx(2 / math.comb(4, 2))
        == pytest.approx(1 / 3)
    )
    assert claims.min_attainable_p("logrank", 2, 2) == pytest.approx(0.0833, abs=1e-4)


def test_the_log_rank_quantities_are_lifelines():
    """(O - E)^2 / V of ``logrank_o_e_v`` is lifelines' statistic, ties and censoring included."""
    from lifelines.statistics import logrank_test

    rng = np.random.default_rng(3)
    for _ in range(30):
        na, nb = rng.integers(1, 7, size=2)
        da, db = rng.integers(0, 5, na).astype(float), rng.integers(0, 5, nb).astype(float)
        ea, eb = rng.random(na) < 0.7, rng.random(nb) < 0.7
        if not (ea.any() or eb.any()):
            continue
        o_e, v = claims.logrank_o_e_v(da, ea, db, eb)
        ref = logrank_test(da, db, ea, eb).test_statistic
        assert (o_e * o_e / v if v > 0 else 0.0) == pytest.approx(ref, abs=1e-9)


def _all_outcomes(n_a, n_b, times):
    opts = [(t, o) for t in times for o in (True, False)]
    for conf in itertools.product(opts, repeat=n_a + n_b):
        d = np.array([c[0] for c in conf], float)
        e = np.array([c[1] for c in conf], bool)
        if e.any():
            yield d[:n_a], e[:n_a], d[n_a:], e[n_a:]


def test_min_attainable_p_of_the_log_rank_is_the_most_extreme_of_all_outcomes():
    """Every outcome (each run with its event or censored, at episode 0 or 1; 0-2 for 2 vs 3) of
    small designs: none gives a p below ``min_attainable_p``, and one gives exactly it. Through
    lifelines for 2 vs 2 and 1 vs 3; through the log-rank quantities (checked against lifelines
    above) for the larger ones."""
    from lifelines.statistics import logrank_test
    from scipy.stats import chi2

    for n_a, n_b in ((2, 2), (1, 3)):
        ps = [logrank_test(da, db, ea, eb).p_value for da, ea, db, eb in _all_outcomes(n_a, n_b, range(2))]
        assert min(ps) == pytest.approx(claims.min_attainable_p("logrank", n_a, n_b), rel=1e-9)
    for n_a, n_b in ((2, 3), (3, 3), (2, 4)):
        best = 0.0
        for da, ea, db, eb in _all_outcomes(n_a, n_b, range(3 if n_a + n_b == 5 else 2)):
            o_e, v = claims.logrank_o_e_v(da, ea, db, eb)
            best = max(best, o_e * o_e / v if v > 0 else 0.0)
        assert chi2.sf(best, 1) == pytest.approx(claims.min_attainable_p("logrank", n_a, n_b), rel=1e-9)
    # not the all-tied outcome: at 2 vs 3 the extreme has the first group's events apart
    assert claims.min_attainable_p("logrank", 2, 3) < chi2.sf(2 + 3 - 1, 1)


def test_no_test_goes_below_its_design_limit_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(40):
        na, nb = rng.integers(2, 9, size=2)
        a = runs([int(s) if rng.random() < 0.7 else None for s in rng.integers(0, 20, na)], last=30)
        b = runs([int(s) if rng.random() < 0.7 else None for s in rng.integers(0, 20, nb)], last=30)
        c = claims.compare_stops(a, b)
        if np.isfinite(c.p):
            assert c.p >= c.min_p * (1 - 1e-9)
        x, y = rng.permutation(na + nb)[:na].astype(float), rng.normal(size=nb)
        r = claims.compare_returns(x, y, reps=50)
        assert mannwhitneyu(x, y, method="exact").pvalue >= r.min_p * (1 - 1e-9)


# ----------------------------------------------------------------------------- the verdicts
def test_two_vs_two_is_not_detectable_whatever_the_data():
    rng = np.random.default_rng(1)
    cases = [
        (runs([1, 2]), runs([None, None])),  # separated stops
        (runs([None, None]), runs([1, 1])),
        (runs([3, None]), runs([4, 5])),
    ]
    for a, b in cases:
        v = one(claims.compare_stops(a, b))
        assert v.label == "not detectable at n = 2 vs 2" and not v.finding
        assert v.min_p > v.threshold and "Holm p" not in v.text and "Holm p" not in v.brief
    for _ in range(10):
        x, y = rng.normal(size=2) + rng.choice([0.0, 1e6]), rng.normal(size=2)
        v = one(claims.compare_returns(x, y, reps=50))
        assert v.label == "not detectable at n = 2 vs 2" and v.min_p == pytest.approx(1 / 3)
    # in a family of one test as in one of 24: the design decides, not the data
    sep = claims.compare_returns([100.0, 101.0], [0.0, 1.0], reps=50)
    assert sep.p == pytest.approx(1 / 3)
    assert {v.label for v in claims.family([sep] * 24)} == {"not detectable at n = 2 vs 2"}


def test_ten_vs_ten_perfectly_separated_is_detected_in_the_right_direction():
    hi, lo = np.arange(10) + 100.0, np.arange(10, dtype=float)
    up = one(claims.compare_returns(hi, lo, reps=200), names=("x", "y"))
    assert up.label == "holds" and up.direction == 1 and up.effect.value == 1.0
    assert up.p_holm < 0.05 and up.text.startswith("holds: x higher than y")
    down = one(claims.compare_returns(lo, hi, reps=200))
    assert down.label == "holds" and down.direction == -1 and down.effect.value == 0.0
    # a claim of the opposite direction is contradicted; of the right one, holds
    assert one(claims.compare_returns(lo, hi, reps=200), expect=1).label == "contradicted"
    assert one(claims.compare_returns(lo, hi, reps=200), expect=-1).label == "holds"
    # stops: a's runs stop at episodes 1-10, b's never (censored at 99): a stops sooner
    early, never = runs(list(range(1, 11))), runs([None] * 10)
    s = one(claims.compare_stops(early, never), names=("early", "never"))
    assert s.label == "holds" and s.direction == 1 and s.effect.value > 1 and s.effect.ci_low > 1
    assert "early stops sooner than never" in s.text
    r = one(claims.compare_stops(never, early), expect=1)
    assert r.label == "contradicted" and r.direction == -1 and r.effect.ci_high < 1


def test_the_threshold_is_holms_first_step_over_the_family():
    """4 vs 4: the exact Mann-Whitney's smallest p 2/70 = 0.029 passes alpha / 1, not alpha / 2."""
    c = claims.compare_returns(np.arange(4) + 10.0, np.arange(4, dtype=float), reps=50)
    assert claims.decide(c, c.p, m=1).label == "holds"
    assert claims.decide(c, min(1.0, 2 * c.p), m=2).label == "not detectable at n = 4 vs 4"
    assert claims.detectable("mannwhitney", 4, 4, 1) and not claims.detectable("mannwhitney", 4, 4, 2)


def test_a_non_detection_never_reads_as_no_difference():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=8), rng.normal(size=8)
    texts = []
    nd = one(claims.compare_returns(x, y, reps=100))
    assert nd.label == "not detected" and nd.p_holm >= 0.05
    texts += [nd.text, nd.brief]
    no_test = one(claims.compare_stops(runs([None] * 5), runs([None] * 5)))
    assert no_test.label == "not detected" and "no test" in no_test.text
    texts += [no_test.text, no_test.brief]
    s = one(claims.compare_stops(runs([5, None, 7, None, 9]), runs([6, None, 8, 3, None])))
    assert s.label == "not detected"
    texts += [s.text, s.brief]
    und = one(claims.compare_returns([1.0, 2.0], [1.5, 2.5], reps=50))
    texts += [und.text, und.brief]
    for t in texts:
        assert "no difference" not in t.lower() and "same" not in t.lower(), t
    for v in (nd, no_test, s):
        assert "neither show nor exclude" in v.text and v.brief.startswith(
            f"not detected at n = {v.n_a} vs {v.n_b}"
        )


# ----------------------------------------------------------------------------- the versions
def test_runs_of_two_code_versions_are_never_pooled():
    mixed = runs([1, 2, None, 4], version=[None, "44fba1b", None, "44fba1b"])
    other = runs([None] * 4)
    with pytest.raises(ValueError, match=r"cfg\.published_code"):
        claims.compare_stops(mixed, other)
    with pytest.raises(ValueError, match=r"cfg\.published_code"):
        claims.compare(other, mixed, "return")
    with pytest.raises(ValueError, match=r"cfg\.published_code"):
        claims.require_one_version(mixed)
    # one version per group: comparing the versions with each other is allowed
    assert claims.require_one_version(runs([1], version="44fba1b")) == "44fba1b"
    assert claims.require_one_version(runs([1])) is None
    claims.compare_stops(runs([1, 2], version="44fba1b"), other)
    # a cell of the report's tables that mixes versions is refused too
    cell = mixed.assign(sweep="s", algorithm="ccm_madrl", client_lr=0.1, master_lr=1e-3, steps=10)
    with pytest.raises(ValueError, match=r"cfg\.published_code"):
        claims.returns_table(cell.assign(untrained_return=0.0), pd.DataFrame())


def test_a_claim_evaluated_per_version():
    hi, lo = np.arange(10) + 100.0, np.arange(10, dtype=float)
    holds = one(claims.compare_returns(hi, lo, reps=100), expect=1)
    nd = one(claims.compare_returns(lo, lo[::-1], reps=100), expect=1)
    small = one(claims.compare_returns(hi[:2], lo[:2], reps=50), expect=1)
    contra = one(claims.compare_returns(lo, hi, reps=100), expect=1)
    assert (holds.label, nd.label, small.label, contra.label) == (
        "holds", "not detected", "not detectable at n = 2 vs 2", "contradicted")  # fmt: skip
    only = claims.across_versions({None: nd, "44fba1b": holds})
    assert (
        only.label == "holds only for `published_code: 44fba1b`"
        and "default system: not detected" in only.text
    )
    assert claims.across_versions({None: contra, "44fba1b": holds}).label == claims.HOLDS_ONLY_PUBLISHED
    assert claims.across_versions({None: small, "44fba1b": holds}).label == claims.HOLDS_ONLY_PUBLISHED
    assert claims.across_versions({None: holds, "44fba1b": holds}).label == "holds"
    assert claims.across_versions({None: holds, "44fba1b": nd}).label == "holds"
    assert claims.across_versions({None: nd, "44fba1b": contra}).label == "not detected"
    with pytest.raises(ValueError):
        claims.across_versions({})


# ----------------------------------------------------------------------------- the tables
def test_the_report_tables_carry_a_verdict_and_the_design_limit_per_test():
    from ccm_madrl.archive import ArchiveStore
    from ccm_madrl.report.tables import runs_frame

    store = ArchiveStore([ARCHIVE])
    r = runs_frame(store)
    r = r[r["status"] == "done"]
    lr = claims.logrank_table(r)
    tested = lr[lr["p"].notna()]
    # one testable pair (client lr 1e-4: every run stops; 0.1: none does), a family of one
    assert len(tested) == 1 and (tested["m"] == 1).all()
    row = tested.iloc[0]
    assert row["min_attainable_p"] == pytest.approx(
        claims.min_attainable_p("logrank", row["n_a"], row["n_b"])
    )
    expected = "holds" if row["p"] < 0.05 else "not detected"
    assert row["label"] == expected and row["effect_value"] > 1  # a = 1e-4: its runs stop sooner
    assert (lr.loc[lr["p"].isna(), "label"] == "not detected").all()
    _, poi = claims.returns_table(r, store.baselines)
    for row in poi.to_dict("records"):
        limit = 2 / math.comb(row["n"] + row["n_baseline"], row["n"])
        assert row["min_attainable_p"] == pytest.approx(limit) and row["threshold"] == 0.05 / row["m"]
        if limit >= row["threshold"]:
            assert row["label"] == f"not detectable at n = {row['n']} vs {row['n_baseline']}"
        else:
            assert row["label"] in {"holds", "not detected"}


def test_claims_reads_data_only():
    """claims.py imports the standard library, numpy, pandas, lifelines and report.stats: nothing of
    the training side, nothing else of the report."""
    tree = ast.parse((ROOT / "src" / "ccm_madrl" / "report" / "claims.py").read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add(
                "." * node.level
                + (node.module or "")
                + ("" if node.module else ":" + ",".join(a.name for a in node.names))
            )
    allowed = {"__future__", "itertools", "math", "collections.abc", "dataclasses", "functools", "numpy", "pandas",
               "lifelines.statistics", ".:stats"}  # fmt: skip
    assert mods <= allowed, mods - allowed
