"""The archive (``ccm-madrl archive``), the report rebuilt from it offline, the live store's
compacted monitor files, and the report's statistics checked against hand computations."""

from __future__ import annotations

import json
import math
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ccm_madrl.archive import ArchiveStore, archive_sweep, round_mantissa
from ccm_madrl.cli import main
from ccm_madrl.monitor.integration import read_agents
from ccm_madrl.monitor.stops import agent_stops, run_stops, summary_stops
from ccm_madrl.report import build_report, stats
from ccm_madrl.store import Store, load
from ccm_madrl.sweep import run_sweep

ARCHIVE = Path(__file__).parent / "data" / "archive_tiny"


# ----------------------------------------------------------------------------- statistics by hand
def test_kaplan_meier_equals_the_product_limit_worked_by_hand():
    # episodes 2, 3, 3 (censored), 5, 8 (censored): at risk 5, 4, -, 2 -> S = 4/5, 4/5 * 3/4, 3/5 * 1/2
    d, e = [2, 3, 3, 5, 8], [1, 1, 0, 1, 0]
    sf = stats.kaplan_meier(d, e).survival_function_.iloc[:, 0]
    assert sf.loc[2.0] == pytest.approx(0.8)
    assert sf.loc[3.0] == pytest.approx(0.6)
    assert sf.loc[5.0] == pytest.approx(0.3)
    m = stats.km_median(d, e)
    assert (m["n"], m["events"], m["median"], m["censored_at"]) == (5, 3, 5.0, 8.0)  # S(5) = 0.3 <= 0.5 first
    # fewer than half stopped: the median is not reached, and the table says so
    m = stats.km_median([4, 9, 9, 9], [1, 0, 0, 0])
    assert math.isinf(m["median"]) and stats.fmt_km(m) == "not reached (1/4 stopped by episode 9)"
    assert stats.fmt_km(stats.km_median([9, 9], [0, 0])) == "never (0/2 by episode 9)"


def test_kaplan_median_is_the_first_event_where_s_is_exactly_one_half():
    """S(t) reaching 1/2 exactly is the median (the first t with S(t) <= 0.5), whatever the float
    rounding: lifelines' exp(sum(log)) stores S = 5/6 * 4/5 * 3/4 as 0.5000000000000001."""
    cases = [
        ([148, 160], [1, 1], 148.0),  # S(148) = 1/2
        ([2, 6, 11, 20], [1, 1, 1, 1], 6.0),  # S(6) = 3/4 * 2/3 = 1/2
        ([1, 2, 3, 4, 5, 6], [1] * 6, 3.0),  # S(3) = 5/6 * 4/5 * 3/4 = 1/2; lifelines: 4
        ([1, 2, 3, 4, 4, 4], [1, 1, 1, 0, 0, 0], 3.0),  # half the runs stopped; lifelines: not reached
        # censored before the median: at risk 6, 5, 4 after the run censored at 1 -> S(4) = 1/2
        ([1, 2, 3, 4, 5, 6, 7], [0, 1, 1, 1, 0, 0, 0], 4.0),
        # censored between the events: S(3) = 7/8 * 6/7 = 3/4, 3 runs censored, then S(8) = 3/4 * 2/3 = 1/2
        ([2, 3, 4, 5, 6, 8, 9, 12], [1, 1, 0, 0, 0, 1, 1, 0], 8.0),
    ]
    lifelines_medians = []
    for d, e, expected in cases:
        m = stats.km_median(d, e)
        assert m["median"] == expected == km_median_by_hand(d, e), (d, e)
        assert m["ci_low"] <= m["median"] <= m["ci_high"], (d, e, m)
        lifelines_medians.append(float(stats.kaplan_meier(d, e).median_survival_time_))
    # the old computation (lifelines' median_survival_time_) misses the exact 1/2: the test catches it
    assert lifelines_medians[2:4] == [4.0, math.inf]
    assert stats.fmt_km(stats.km_median([1, 2, 3, 4, 4, 4], [1, 1, 1, 0, 0, 0])) == "3 [1, ∞] (3/6)"


def test_kaplan_median_ci_is_the_same_rule_on_the_band():
    """The CI bounds: the first t at which the band's lower / upper curve is <= 1/2 (to CI_TOL), ∞
    when the curve stays above 1/2; where nothing is at 1/2 they equal lifelines'."""
    from lifelines.utils import median_survival_times

    cases = [
        ([2, 3, 3, 5, 8], [1, 1, 0, 1, 0]),
        ([2, 3, 5, 7, 9], [1, 0, 1, 1, 0]),
        (list(range(1, 11)), [1] * 10),
    ]
    for d, e in cases:
        m = stats.km_median(d, e)
        band = stats.kaplan_meier(d, e).confidence_interval_
        ci = median_survival_times(band)
        assert (m["ci_low"], m["ci_high"]) == (float(ci.iloc[0, 0]), float(ci.iloc[0, 1])), (d, e)
    # a bound a few ulps above 1/2 counts as 1/2; one clearly above does not, and never reaching it is ∞
    curve = pd.Series([1.0, 0.5 + 4e-16, 0.2], index=[0.0, 3.0, 7.0])
    assert stats.first_at_or_below_half(curve, stats.CI_TOL) == 3.0
    above = pd.Series([1.0, 0.5 + 1e-6, 0.2], index=[0.0, 3.0, 7.0])
    assert stats.first_at_or_below_half(above, stats.CI_TOL) == 7.0
    assert math.isinf(stats.first_at_or_below_half(pd.Series([1.0, 0.6], index=[0.0, 3.0]), stats.CI_TOL))


def test_iqm_is_the_mean_of_the_middle_half_and_poi_counts_pairs():
    x = np.array([-200.0, -10.0, -50.0, -40.0, -30.0, -35.0, -90.0, 5.0])
    middle = np.sort(x)[2:6]  # 8 runs: drop 2 at each end
    r = stats.iqm_ci(x, reps=500)
    assert r["iqm"] == pytest.approx(middle.mean()) and r["n"] == 8
    assert r["ci_low"] <= r["iqm"] <= r["ci_high"]
    # P(X > Y): pairs (1,2) no, (3,2) yes, (4,2) yes, ties 1/2 -> 2/3 ; with a tie: (2,2) counts 1/2
    p = stats.probability_of_improvement([1.0, 3.0, 4.0], [2.0], reps=200)
    assert p["poi"] == pytest.approx(2 / 3) and p["cliffs_delta"] == pytest.approx(1 / 3)
    assert stats.probability_of_improvement([2.0, 3.0], [2.0, 1.0])["poi"] == pytest.approx(
        (0.5 + 1 + 1 + 1) / 4
    )


def test_bootstrap_cis_are_reproducible_and_leave_the_global_rng_alone():
    """rliable draws its bootstrap indices from NumPy's global generator: the same input gives the
    same CI whatever the global state, and the caller's global state is left as it was."""
    x, y = (
        np.array([-235.0, -247.7, -227.7, -231.0, -240.2]),
        np.array([-132.4, -142.4, -121.2, -130.0, -140.0]),
    )
    np.random.seed(1)  # noqa: NPY002 - the global generator is the point
    a, pa = stats.iqm_ci(x, reps=300), stats.probability_of_improvement(x, y, reps=300)
    np.random.seed(2)  # noqa: NPY002 - the global generator is the point
    expected = np.random.random(3)  # noqa: NPY002 - the global generator is the point
    np.random.seed(2)  # noqa: NPY002 - the global generator is the point
    b, pb = stats.iqm_ci(x, reps=300), stats.probability_of_improvement(x, y, reps=300)
    assert a == b and pa == pb
    assert np.array_equal(np.random.random(3), expected)  # the bootstrap did not consume the caller's draws  # noqa: NPY002 - the global generator is the point


def test_holm():
    p = pd.Series([0.01, 0.04, 0.03, np.nan])
    adj = stats.holm(p)  # sorted 0.01*3, 0.03*2, 0.04*1 -> monotone: 0.03, 0.06, 0.06
    assert adj.iloc[:3].tolist() == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adj.iloc[3])


# ----------------------------------------------------------------------------- report from the archive
def km_median_by_hand(durations, observed) -> float:
    """The product-limit estimate's median, computed here without lifelines, in exact fractions
    (an S of exactly 1/2 is the median)."""
    d, e = np.asarray(durations, float), np.asarray(observed, bool)
    s = Fraction(1)
    for t in np.unique(d[e]):
        s *= 1 - Fraction(int((e & (d == t)).sum()), int((d >= t).sum()))
        if s <= Fraction(1, 2):
            return float(t)
    return math.inf


@pytest.fixture(scope="module")
def archived_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("arep")
    return build_report([ARCHIVE], out / "rep")


def test_report_rebuilds_from_the_committed_archive_alone(archived_report):
    res = archived_report
    assert {"stop_heatmap", "km_curves", "performance_profiles", "learning_curves", "grad_norms",
            "layer_grad_norms", "preactivations", "saturation_over_time"} <= set(res.figures)  # fmt: skip
    runs = pd.read_parquet(ARCHIVE / "runs.parquet")
    t1 = res.tables["table1"]
    assert t1["seeds"].sum() == len(runs) == 8
    # Kaplan-Meier medians and IQMs of the report equal a computation straight from runs.parquet
    surv = res.tables["survival"]
    iq = res.tables["returns_iqm"]
    for lr, g in runs.groupby("cfg.agent.actor_lr"):
        for event in ("all_actors_stop_thr", "critic_stop_thr", "all_actors_grad_zero"):
            ev = g[event].to_numpy(float)
            d = np.where(np.isfinite(ev), ev, g["episodes_done"] - 1)
            row = surv[(surv["client_lr"] == lr) & (surv["event"] == event)].iloc[0]
            assert row["median"] == km_median_by_hand(d, np.isfinite(ev)), (lr, event)
            assert row["events"] == np.isfinite(ev).sum()
        x = np.sort(g["final_return"].to_numpy())
        assert iq.loc[iq["client_lr"] == lr, "iqm"].item() == pytest.approx(x[1:3].mean())  # 4 runs: middle 2
    # probability of improvement over the all-local baseline: counted pairs
    poi = res.tables["probability_of_improvement"]
    base = pd.read_parquet(ARCHIVE / "baselines.parquet")
    y = base.loc[base["baseline"] == "all_local", "final_return"].to_numpy()
    for lr, g in runs.groupby("cfg.agent.actor_lr"):
        x = g["final_return"].to_numpy()
        by_hand = ((x[:, None] > y[None]).sum() + 0.5 * (x[:, None] == y[None]).sum()) / (len(x) * len(y))
        got = poi[(poi["client_lr"] == lr) & (poi["baseline"] == "all_local")]["poi"].item()
        assert got == pytest.approx(by_hand)
    md = (res.out_dir / "report.md").read_text()
    assert "Kaplan-Meier" in md
    # the verdicts (report.claims): 4 vs 4 runs against the baselines cannot reach Holm's first
    # threshold (the exact Mann-Whitney's smallest p 2/C(8,4) = 0.029 > 0.05/m), whatever the data
    assert set(poi["label"]) == {"not detectable at n = 4 vs 4"}
    assert "not detectable at n = 4 vs 4 (smallest attainable p 0.029" in md


def test_archive_tables_equal_the_live_store_and_rerun_is_idempotent(tmp_path):
    f = tmp_path / "s.yaml"
    spec = yaml.safe_load((ARCHIVE.parent / "archive_tiny_sweep.yaml").read_text())
    spec["base"]["training"]["episodes"] = 5
    spec["axes"] = {"agent.actor_lr": [1e-4, 1e-1]}
    spec["seeds"] = 1
    f.write_text(yaml.safe_dump(spec))
    run_sweep(f, tmp_path / "sw", workers=1, progress=False)
    # a finished run's monitor is compacted: one file per table, no parts
    rd = next((tmp_path / "sw" / "runs").iterdir())
    assert sorted(p.name for p in (rd / "monitor").iterdir()) == [
        "agents.parquet", "episodes.parquet", "stops.parquet", "summary.json"]  # fmt: skip
    live = Store([tmp_path / "sw"])
    assert set(live.table("metrics", ["eval_return"]).columns) == {"eval_return", "run_id"}
    # stop events from the summary equal those recomputed from the per-agent rows
    agents = read_agents(rd / "monitor")
    thr = spec["base"]["monitor"]["stop_threshold"]
    pd.testing.assert_frame_equal(live._stops_of(rd), agent_stops(agents, thr), check_dtype=False)
    # ... and so do those from the per-episode aggregates, also for every prefix of the run
    summ = live._summary_of(rd, None)
    trained = live.metrics.query("run_id == @rd.name and trained")["episode"].to_numpy()
    for upto in (*range(1, 6), np.inf):
        want = run_stops(agents[agents["episode"] < upto], thr)
        got = summary_stops(summ, trained, upto)
        assert set(got) <= set(want)
        for k, v in got.items():
            assert (np.isnan(v) and np.isnan(want[k])) or v == want[k], (upto, k, v, want[k])
    # per-layer dead and dormant fractions are aggregated per episode and role; an episodes.parquet
    # written without them (before they were aggregated) is re-aggregated from agents.parquet
    from ccm_madrl.monitor import compact

    summary = live._summary_of(rd, None)
    dead = [c for c in agents.columns if c.startswith("dead.")]
    assert dead and all(f"{c}_mean" in summary for c in dead)
    critic = summary[summary["role"] == "critic"].set_index("episode")[f"{dead[0]}_mean"]
    by_hand = agents[agents["role"] == "critic"].set_index("episode")[dead[0]]
    np.testing.assert_allclose(critic.to_numpy(), by_hand.loc[critic.index].to_numpy())
    old_style = summary.drop(columns=[c for c in summary if c.startswith(("dead.", "dormant."))])
    old_style.to_parquet(rd / "monitor" / "episodes.parquet")
    assert not compact.episodes_current(rd / "monitor")
    pd.testing.assert_frame_equal(Store([tmp_path / "sw"])._summary_of(rd, None), summary)

    out = tmp_path / "arch"
    res = archive_sweep(tmp_path / "sw", out, baselines=False)
    assert len(res["added"]) == 2 and res["bytes_per_run"] < 300_000
    arch = load(out)
    assert isinstance(arch, ArchiveStore)
    a = arch.metrics.set_index(["run_id", "episode"]).sort_index()
    m = live.metrics.set_index(["run_id", "episode"]).sort_index()
    assert set(a.columns) == set(m.columns)
    for c in m.columns:
        x = pd.to_numeric(m[c], errors="coerce").astype(float).to_numpy()
        y = pd.to_numeric(a[c], errors="coerce").astype(float).to_numpy()
        np.testing.assert_allclose(y, x, rtol=2.5e-4, atol=0, equal_nan=True, err_msg=c)
    np.testing.assert_array_equal(a["eval_return"], m["eval_return"])  # exact
    r_live = live.runs.set_index("run_id").sort_index()
    r_arch = arch.runs.set_index("run_id").sort_index()
    for c in (
        "final_return",
        "untrained_return",
        "all_actors_stop_thr",
        "first_actor_stop_thr",
        "cfg.agent.architecture.actor_hidden",
    ):
        assert r_arch[c].astype(str).tolist() == r_live[c].astype(str).tolist(), c
    # idempotent: nothing new, nothing rewritten
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert archive_sweep(tmp_path / "sw", out, baselines=False)["added"] == []
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a newly finished run is added, the others kept
    spec["axes"] = {"agent.actor_lr": [1e-4, 1e-1, 1e-2]}
    f.write_text(yaml.safe_dump(spec))
    run_sweep(f, tmp_path / "sw", workers=1, progress=False, extend=True)  # a larger plan: --extend
    res = archive_sweep(tmp_path / "sw", out, baselines=False)
    assert len(res["added"]) == 1 and res["archived"] == 3
    index = json.loads((out / "archive.json").read_text())
    assert len(index["history"]) == 2
    # the code the runs ran, from their own provenance: all 3 from this checkout
    prov = [json.loads(t) for t in pd.read_parquet(out / "configs.parquet")["provenance_json"]]
    p0 = prov[0]
    assert index["runs_provenance"] == [
        {"version": p0["version"], "commit": p0["commit"], "dirty": p0["dirty"], "device": p0["device"],
         "device_name": p0["device_name"], "runs": 3}
    ]  # fmt: skip
    # no path of this machine: the source by its name, run directories relative to the sweep
    assert index["source"] == "sw" and str(tmp_path) not in index["command"]
    assert index["command"].startswith("ccm-madrl archive sw --out ")
    assert all(d.startswith("runs/") for d in pd.read_parquet(out / "runs.parquet")["run_dir"])
    # a run marked failed after its last episode is archived only on request, with a note
    st = json.loads((rd / "status.json").read_text())
    (rd / "status.json").write_text(
        json.dumps({**st, "state": "failed", "error": "Traceback\nOSError: disk full"})
    )
    assert rd.name not in archive_sweep(tmp_path / "sw", tmp_path / "a2", baselines=False)["added"]
    res = archive_sweep(tmp_path / "sw", tmp_path / "a3", baselines=False, include_complete_failed=True)
    assert rd.name in res["added"]
    note = load(tmp_path / "a3").runs.set_index("run_id").at[rd.name, "archive_note"]
    assert note == "failed after its last episode: OSError: disk full"
    # an interrupted run is archived only into a prefix archive, which never mixes with finished runs
    (rd / "status.json").write_text(json.dumps({**st, "state": "interrupted", "episodes_done": 3}))
    assert rd.name not in archive_sweep(tmp_path / "sw", tmp_path / "a4", baselines=False)["added"]
    with pytest.raises(ValueError, match="holds only finished runs"):
        archive_sweep(tmp_path / "sw", tmp_path / "a4", baselines=False, include_interrupted=True)
    res = archive_sweep(tmp_path / "sw", tmp_path / "a5", baselines=False, include_interrupted=True)
    assert rd.name in res["added"] and res["archived"] == 3
    pre = load(tmp_path / "a5").runs.set_index("run_id")
    assert pre.at[rd.name, "status"] == "interrupted" and pre.at[rd.name, "episodes_done"] == 3
    assert json.loads((tmp_path / "a5" / "archive.json").read_text())["includes_interrupted"] is True
    with pytest.raises(ValueError, match="is a prefix archive"):
        archive_sweep(tmp_path / "sw", tmp_path / "a5", baselines=False)


def test_round_mantissa_keeps_zeros_and_relative_precision():
    x = np.array([0.0, 1e-42, -3.14159, 1e30, np.nan, np.inf], dtype=np.float32)
    r = round_mantissa(x)
    assert r[0] == 0 and r[1] != 0 and np.isnan(r[4]) and np.isinf(r[5])
    assert abs(r[2] / x[2] - 1) <= 2**-13
    y = np.array([7.123456789e-40, 12.5], dtype=np.float64)
    assert np.all(np.abs(round_mantissa(y) / y - 1) <= 2**-13)


def test_cli_archive_and_report(tmp_path, capsys):
    arch = tmp_path / "a"
    shutil.copytree(ARCHIVE, arch)
    assert main(["report", str(arch), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "tables" / "table1.csv").exists()
    assert (tmp_path / "r" / "tables" / "survival.csv").exists()  # the statistics are core dependencies
    assert main(["archive", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "SWEEP_DIR" in capsys.readouterr().err


def test_table1_doc_script_writes_every_section_from_an_archive(tmp_path):
    """scripts/table1_doc.py (docs/table1.md's generator) on the tiny archive: the grid table, the six
    verdicts and the study's progress table, each sweep counted from results/."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "table1.md"
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "table1_doc.py"), str(root / "tests" / "data" / "archive_tiny"),
         "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root / "src")}, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    assert text.count("**5.") == 6 and "## The study's runs, finished so far" in text
    assert "Log-rank tests of the all-actors stop between adjacent learning rates" in text
    # the two versions side by side: two archives under the grids' sweep names
    pair = []
    for name in ("table1_s10", "table1_s10_published"):
        d = tmp_path / name
        shutil.copytree(root / "tests" / "data" / "archive_tiny", d)
        idx = json.loads((d / "archive.json").read_text())
        (d / "archive.json").write_text(json.dumps({**idx, "sweep": name}))
        pair.append(str(d))
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "table1_doc.py"), *pair, "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root / "src")}, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    section = text.split("## The two versions, cell by cell")[1].split("\n## ")[0]
    rows = [x for x in section.splitlines() if x.startswith("| 0")]
    # the same runs under both names: nothing detected, and the returns' 4 vs 4 Mann-Whitney tests
    # (smallest p 2/C(8,4) = 0.029 > 0.05/m) not detectable
    assert rows and all("holds" not in x and "contradicted" not in x for x in rows)
    assert all(x.count("not detectable at n = 4 vs 4") == 1 for x in rows)
    assert "| `ccm-madrl sweep configs/controls/bounded_critic.yaml` | 80 |" in text


def test_table1_doc_counts_the_runs_that_end_at_the_all_local_return():
    """docs/table1.md's 5.3 count on a crafted input: a run matches the all-local policy's return of
    its own seed (within 0.01), not another seed's; the others' returns are grouped at 0.1."""
    import importlib.util
    from types import SimpleNamespace

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("table1_doc", root / "scripts" / "table1_doc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = pd.DataFrame(
        {"baseline": ["all_local", "all_local", "random_selection"], "seed": [0, 1, 0],
         "final_return": [-35.03, -36.00, -54.6]}
    )  # fmt: skip
    runs = pd.DataFrame(
        {"cfg.seed": [0, 1, 0, 1, 0, 1], "client_lr": [1e-3, 1e-3, 1e-2, 1e-2, 0.1, 0.1],
         "master_lr": [1e-3] * 6, "final_return": [-35.025, -35.03, -101.1, -101.14, -200.0, np.nan]}
    )  # fmt: skip
    text = mod.all_local_match("shared actor", SimpleNamespace(baselines=base), runs)
    assert text.startswith(
        "shared actor: 1 of 5 (client / master lr: 0.001 / 0.001; all-local return -36.00, -35.03)"
    )
    assert text.endswith("-101.1 (2 runs), 2 other distinct values (-35.0 to -200.0)")
    assert mod.all_local_match("shared actor", SimpleNamespace(baselines=base.iloc[2:]), runs) is None


def test_controls_doc_script_tabulates_the_archived_screen(tmp_path):
    """scripts/controls_doc.py (docs/controls.md's generator) on the archived screen of the two
    controls: one row per variant and client lr, and each control against the baseline per lr."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    names = ["screen_baseline", "screen_control_linear_clip_actor", "screen_control_bounded_critic"]
    out = tmp_path / "controls.md"
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "controls_doc.py"), *[str(root / "results" / n) for n in names],
         "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root / "src")}, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    lines = out.read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ") and "(n = " in line]
    assert len(rows) == 12
    assert sum("identity gradient" in line for line in rows) == 4
    verdict = ("holds", "contradicted", "not detected at n = ", "not detectable at n = ")  # report.claims
    tests = [
        line for line in lines if line.startswith("| ") and " vs " in line and any(v in line for v in verdict)
    ]
    assert len(tests) == 8  # the two controls against the baseline, 4 learning rates each


def test_screens_doc_labels_each_variant_by_what_its_config_changes(tmp_path):
    """scripts/screens_doc.py (docs/screens.md's generator): a run's variant is the config fields in
    which it differs from the baseline's runs; without the baseline's archive: one line, exit 2."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    script, env = str(root / "scripts" / "screens_doc.py"), {**os.environ, "PYTHONPATH": str(root / "src")}
    out = tmp_path / "screens.md"
    archives = [str(root / "results" / n) for n in ("screen_baseline", "screen_control_linear_clip_actor")]
    r = subprocess.run([sys.executable, script, *archives, "--out", str(out)], capture_output=True, text=True,
                       env=env, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "(n = " in line]
    assert [line.split(" | ")[0] for line in rows] == ["| baseline"] * 4 + [
        "| control_linear_clip_actor: activation=linear_clip"
    ] * 4
    r = subprocess.run([sys.executable, script, archives[1], "--out", str(tmp_path / "x.md")], capture_output=True,
                       text=True, env=env, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "none is screen_baseline" in r.stderr and not (tmp_path / "x.md").exists()
    page = tmp_path / "page.md"  # --fill: the marked blocks of a page, from the archives named
    page.write_text("a\n<!-- screen: control_linear_clip_actor -->\nSTALE TABLE\n<!-- /screen -->\nb\n")
    r = subprocess.run([sys.executable, script, *archives, "--out", str(out), "--fill", str(page)],
                       capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    text = page.read_text()
    assert (
        "STALE TABLE" not in text
        and text.startswith("a\n<!-- screen:")
        and text.endswith("<!-- /screen -->\nb\n")
    )
    assert text.count("| control_linear_clip_actor: activation=linear_clip |") == 8  # 4 cells, 4 comparisons
    page.write_text("<!-- screen: activations -->\n<!-- /screen -->\n")
    r = subprocess.run([sys.executable, script, *archives, "--out", str(out), "--fill", str(page)],
                       capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "no archive given for screen_activations" in r.stderr


def test_the_same_run_in_two_archives_keeps_one_run_id_per_run(tmp_path):
    """A screen that repeats the baseline's settings holds runs with the baseline's run ids: in a
    store over both archives every table's run_id names one run (the later archive's copy becomes
    "<sweep>/<run id>"), as store.unique_run_ids does for run directories."""

    from ccm_madrl.store import unique_run_ids

    root = Path(__file__).resolve().parents[1] / "tests" / "data" / "archive_tiny"
    other = tmp_path / "again"
    shutil.copytree(root, other)
    index = json.loads((other / "archive.json").read_text())
    index["sweep"] = "again"
    (other / "archive.json").write_text(json.dumps(index))
    one, both = ArchiveStore([root]), ArchiveStore([root, other])
    n = len(one.runs)
    assert len(both.runs) == 2 * n and both.runs["run_id"].is_unique
    assert list(both.runs["run_id"].iloc[n:]) == [f"again/{r}" for r in one.runs["run_id"]]
    for name in ("metrics", "monitor_summary", "stops"):
        t1, t2 = one.table(name), both.table(name)
        assert len(t2) == 2 * len(t1) and set(t2["run_id"]) <= set(both.runs["run_id"])
    assert unique_run_ids(["a", "b", "b"], ["x", "x", "y"]) == ["x", "b/x", "y"]


def test_tables_concatenate_without_an_all_missing_part_deciding_the_dtype():
    """A stop column that is all missing in one archive (no run stopped there) stays float64 when
    the archives' tables are put together, and pandas' deprecation warning is not raised."""
    import warnings

    from ccm_madrl.store import concat_tables

    a = pd.DataFrame({"run_id": ["a"], "stop": [None], "flag": [True]})
    b = pd.DataFrame({"run_id": ["b"], "stop": [12.0], "flag": [False]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        t = concat_tables([a, b])
    assert t.columns.tolist() == ["run_id", "stop", "flag"] and t["stop"].dtype == np.float64
    assert np.isnan(t.at[0, "stop"]) and t.at[1, "stop"] == 12.0 and t["flag"].tolist() == [True, False]
    assert concat_tables([]).empty


def test_table1_doc_prefix_section_on_a_prefix_equal_to_its_runs(tmp_path):
    """The prefix section (``table1_doc.py --prefix``) given the tiny archive both as the prefix and
    as the finished runs: every prefix stop lasts from the same episode and every pair agrees."""
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "scripts"))
    import table1_doc

    d = tmp_path / "table1_s10"
    shutil.copytree(ARCHIVE, d)
    idx = json.loads((d / "archive.json").read_text())
    (d / "archive.json").write_text(json.dumps({**idx, "sweep": "table1_s10"}))
    store = ArchiveStore([d])
    ev = table1_doc.prefix_events(store)
    runs = store.runs.set_index("run_id")
    for k in ("all_actors_stop_thr", "all_actors_grad_zero", "critic_stop_thr"):
        np.testing.assert_array_equal(ev[k].to_numpy(float), runs.loc[ev["run_id"], k].to_numpy(float))
    notes: dict = {}
    text = "\n".join(table1_doc.prefix_section([str(d)], {"table1_s10": (store, None)}, notes))
    n, k = len(ev), int(ev["all_actors_stop_thr"].notna().sum())
    assert k > 0 and f"{k} had all actors stopped at the cut; {k} of them were still stopped" in text
    assert "from the same episode" in text and f"is the same in {n} of {n} pairs" in text
    assert f"equal in every episode in {n} pairs." in text
    hi = int(((ev.client_lr >= 0.01) & ev.master_lr.isin([1e-4, 1e-3])).sum())
    assert f"n = {hi})" in notes["5.1"]["table1_s10"]
    # the whole script with --prefix: the section, its figure and the verdicts citing it
    import subprocess

    out = tmp_path / "table1.md"
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "table1_doc.py"), str(d), "--out", str(out), "--prefix", str(d)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root / "src")}, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    doc = out.read_text()
    assert "## The first episodes at 10 seeds" in doc and "table1_s10_prefix_km_curves.png" in doc
    assert (tmp_path / "table1" / "table1_s10_prefix_km_curves.png").exists()
    for claim in ("5.1", "5.3", "5.4", "5.5"):
        line = next(x for x in doc.splitlines() if x.startswith(f"**{claim} "))
        assert "At all 10 seeds on a GPU-trained prefix" in line, claim


def test_the_history_lists_each_run_once_and_the_provenance_counts_the_runs_code(tmp_path):
    from ccm_madrl.archive import history_once, runs_provenance

    old = [{"time_utc": "t0", "added": ["a", "b"]}, {"time_utc": "t1", "added": ["a", "b", "c"]}]
    assert history_once(old, ["d", "c"], "t2") == [
        {"time_utc": "t0", "added": ["a", "b"]},
        {"time_utc": "t1", "added": ["c"], "re_added": ["a", "b"]},
        {"time_utc": "t2", "added": ["d"], "re_added": ["c"]},
    ]
    assert history_once([], [], "t") == [{"time_utc": "t", "added": []}]
    prov = [
        {"version": "0.1.0", "commit": "c1", "dirty": False},
        {"version": "0.0.0+unknown", "commit": "c0", "dirty": True},
        {"version": "0.1.0", "commit": "c1", "dirty": False},
        {},
    ]
    configs = pd.DataFrame({"provenance_json": [json.dumps(p) for p in prov]})
    unknown = {"device": "unknown", "device_name": "unknown"}
    assert runs_provenance(configs) == [
        {"version": "0.1.0", "commit": "c1", "dirty": False, **unknown, "runs": 2},
        {"version": "0.0.0+unknown", "commit": "c0", "dirty": True, **unknown, "runs": 1},
        {"version": "unknown", "commit": "unknown", "dirty": None, **unknown, "runs": 1},
    ]
    assert runs_provenance(pd.DataFrame()) == []
    # an archive written before either existed is brought up to date from its own tables
    from ccm_madrl.archive import refresh_index

    tmp = tmp_path
    machine = {
        "source": "/data/me/sweeps/grid",
        "command": "ccm-madrl archive /data/me/sweeps/grid --out results/grid",
    }
    (tmp / "archive.json").write_text(json.dumps({"history": old, **machine}))
    configs.to_parquet(tmp / "configs.parquet")
    pd.DataFrame({"run_id": ["a", "b"], "run_dir": ["/data/me/sweeps/grid/runs/a", "runs/b"]}).to_parquet(
        tmp / "runs.parquet"
    )
    index = refresh_index(tmp)
    assert index["runs_provenance"] == runs_provenance(configs)
    assert (index["source"], index["command"]) == ("grid", "ccm-madrl archive grid --out results/grid")
    assert pd.read_parquet(tmp / "runs.parquet")["run_dir"].tolist() == ["runs/a", "runs/b"]
    assert [h["added"] for h in json.loads((tmp / "archive.json").read_text())["history"]] == [
        ["a", "b"],
        ["c"],
    ]


def test_an_archive_without_baselines_loads_and_the_report_says_they_are_missing(tmp_path):
    """The baselines are written when a sweep is archived; the report reads them and never runs a
    learner: an archive without them still loads, and the report says in one line that they are
    missing."""
    import shutil

    from ccm_madrl.report import MISSING_BASELINES, _missing_baselines
    from ccm_madrl.store import load

    assert _missing_baselines(load(ARCHIVE)) == ""
    old = tmp_path / "old"
    shutil.copytree(ARCHIVE, old)
    (old / "baselines.parquet").unlink()
    store = load(old)
    assert len(store.runs) == 8 and store.baselines.empty
    assert _missing_baselines(store) == MISSING_BASELINES
