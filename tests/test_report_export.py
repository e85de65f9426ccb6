"""The report's rliable figures, its censored 'never' band, figures without data left undrawn, and
the export to marl-eval's raw-data JSON, on the tiny archive of tests/data (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from ccm_madrl.report import figures as figs
from ccm_madrl.report import stats
from ccm_madrl.report.export import marl_eval_data, write_marl_eval
from ccm_madrl.report.tables import runs_frame
from ccm_madrl.rundir import FINAL_EPISODES
from ccm_madrl.store import load

ARCHIVE = Path(__file__).parent / "data" / "archive_tiny"


@pytest.fixture(scope="module")
def store():
    return load([ARCHIVE])


@pytest.fixture(scope="module")
def runs(store):
    r = runs_frame(store)
    return r[r["status"] == "done"]


def test_marl_eval_export_has_marl_evals_layout_and_the_runs_numbers(store, runs, tmp_path):
    path = write_marl_eval(runs, store.metrics, tmp_path / "marl_eval.json")
    data = json.loads(path.read_text())
    (env, tasks), = data.items()
    assert env == f"mec_n{int(runs['cfg.env.n_agents'].iloc[0])}"
    (task, algos), = tasks.items()
    assert task == "tiny"
    assert sorted(algos) == ["ccm_madrl client_lr=0.0001 master_lr=0.001", "ccm_madrl client_lr=0.1 master_lr=0.001"]
    n_runs = sum(len(seeds) for seeds in algos.values())
    assert n_runs == len(runs)
    for _, run in runs.iterrows():
        algo = f"ccm_madrl client_lr={run['client_lr']:g} master_lr={run['master_lr']:g}"
        entry = algos[algo][f"run_{int(run['cfg.seed'])}"]
        m = store.metrics[store.metrics["run_id"] == run["run_id"]].dropna(subset=["eval_return"])
        steps = [k for k in entry if k.startswith("step_")]
        assert len(steps) == len(m)
        for k, (_, row) in zip(sorted(steps, key=lambda s: int(s[5:])), m.sort_values("episode").iterrows()):
            assert entry[k]["step_count"] == int(row["episode"]) * int(run["steps"])
            assert entry[k]["episode_return"] == [pytest.approx(row["eval_return"], abs=0)]
            assert set(entry[k]) == {"step_count", "episode_return", "constraint_violation"}
        final = entry["absolute_metrics"]["episode_return"]
        assert len(final) == min(len(m), FINAL_EPISODES)
        assert np.mean(final) == pytest.approx(run["final_return"], rel=1e-12)


def test_marl_eval_export_writes_nothing_without_evaluations(runs, store, tmp_path):
    metrics = store.metrics.assign(eval_return=np.nan)
    assert marl_eval_data(runs, metrics) == {}
    assert write_marl_eval(runs, metrics, tmp_path / "m.json") is None
    assert not (tmp_path / "m.json").exists()


def test_interval_estimates_are_rliables_and_the_figure_draws_one_row_per_cell(runs, store, tmp_path):
    scores = {clr: g["final_return"].to_numpy() for clr, g in runs.groupby("client_lr")}
    points, cis, names = stats.interval_estimates({**scores, "one run": np.array([1.0])})
    assert names == ["IQM", "median", "mean"] and "one run" not in points
    for clr, x in scores.items():
        assert points[clr][2] == pytest.approx(np.mean(x))
        assert points[clr][1] == pytest.approx(np.median(x))
        lo, hi = cis[clr][:, 2]
        assert x.min() <= lo <= points[clr][2] <= hi <= x.max()
    again = stats.interval_estimates(scores)[1]
    assert all(np.array_equal(again[k], cis[k]) for k in scores)  # reproducible (random state 0)
    with plt.rc_context(figs.STYLE):
        png = figs.interval_estimates(runs, store, tmp_path)
    assert png.exists() and png.stat().st_size > 10_000


def test_performance_profile_bands_contain_the_profile(runs):
    scores = {clr: g["final_return"].to_numpy() for clr, g in runs.groupby("client_lr")}
    taus = np.linspace(runs["final_return"].min() - 1, runs["final_return"].max() + 1, 50)
    profiles, cis = stats.performance_profile(scores, taus)
    for clr, x in scores.items():
        assert np.allclose(profiles[clr], [(x > t).mean() for t in taus])
        lo, hi = cis[clr]
        assert np.all(lo <= profiles[clr] + 1e-12) and np.all(profiles[clr] <= hi + 1e-12)


def test_never_stopped_runs_sit_in_a_labelled_band_above_the_last_episode(runs, store, tmp_path, monkeypatch):
    drawn = {}
    orig = figs._save

    def keep(fig, out, name, data):
        drawn["ax"] = fig.axes[0]
        drawn["ylabels"] = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        drawn["y"] = np.concatenate([c.get_offsets()[:, 1] for c in fig.axes[0].collections if hasattr(c, "get_offsets") and len(c.get_offsets())])
        return orig(fig, out, name, data)

    monkeypatch.setattr(figs, "_save", keep)
    with plt.rc_context(figs.STYLE):
        figs.asymmetry_vs_stop(runs, store, tmp_path)
    horizon = float(runs["episodes_done"].max())
    never = runs["all_actors_stop_thr"].isna().sum()
    assert never > 0 and "never" in drawn["ylabels"]
    y = drawn["y"]
    assert (y > horizon).sum() == never  # censored runs above the last episode, not at a fake episode
    lo, hi = drawn["ax"].get_ylim()
    assert np.all(y <= hi) and drawn["ax"].get_yscale() == "linear"


def test_a_figure_without_data_is_not_drawn_and_says_why(runs, store, tmp_path, monkeypatch):
    stops = store.stops.assign(stop_exact=np.nan, stop_thr=np.nan)
    monkeypatch.setitem(store.__dict__, "stops", stops)
    made, skipped = figs.make_all(runs, store, tmp_path)
    assert "agent_stop_distribution" not in made
    assert skipped["agent_stop_distribution"].startswith("no agent stopped (")
    assert not (tmp_path / "agent_stop_distribution.png").exists()


def test_variants_of_a_sweep_are_separate_lines_and_each_panel_names_its_quantity(runs, store, tmp_path, monkeypatch):
    seen = {}
    orig = figs._save

    def keep(fig, out, name, data):
        seen[name] = [(ax.get_title(), ax.get_ylabel(), [ln.get_label() for ln in ax.get_lines()]) for ax in fig.axes]
        return orig(fig, out, name, data)

    monkeypatch.setattr(figs, "_save", keep)
    two = runs.assign(sweep=np.where(runs["cfg.seed"] % 2 == 0, "tiny [agent.actor_update=a]", "tiny [agent.actor_update=b]"))
    with plt.rc_context(figs.STYLE):
        figs.grad_norms(two, store, tmp_path)
    panels = {title: (ylabel, labels) for title, ylabel, labels in seen["grad_norms"]}
    assert panels["grad_ratio"][0] == "actor / critic norm ratio" and panels["actor_grad_norm"][0] == "L2 norm"
    labels = panels["actor_grad_norm"][1]
    assert len(labels) == 4 and any("actor_update=a" in lbl for lbl in labels) and any("actor_update=b" in lbl for lbl in labels)


def test_the_report_says_each_stage_and_figure_with_its_time(tmp_path):
    from ccm_madrl.report import build_report

    lines = []
    build_report([ARCHIVE], tmp_path / "rep", progress=lines.append)
    assert lines[0].startswith("report: loaded 8 runs from 1 directory (")
    assert any(ln.startswith("report: statistics") for ln in lines)
    assert [ln.split()[2] for ln in lines if ln.startswith("report: figure ")] == [f.__name__ for f in figs.FIGURES]
    assert lines[-1].startswith(f"report: written: {tmp_path / 'rep'} (")
    secs = [float(ln.rsplit("(", 1)[1].split()[0]) for ln in lines]
    assert secs == sorted(secs)
