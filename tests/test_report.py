"""The report from a small real sweep: tables recomputed independently, figures not blank, HTML
self-contained, partial and multiple sweeps."""

from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml

from ccm_madrl.agents.networks import BatchedActor, MasterCritic
from ccm_madrl.cli import main
from ccm_madrl.experiment.describe import write_missing_descriptions
from ccm_madrl.report import build_report
from ccm_madrl.report.tables import table2
from ccm_madrl.store import load
from ccm_madrl.sweep import run_sweep

T975 = {1: math.tan(0.475 * math.pi)}  # t(0.975, 1): the Cauchy quantile, exact
THRESHOLD = 1e-3  # large enough that some cells stop within a few episodes

BASE = {
    "env": {"n_agents": 12, "max_steps": 4},
    "agent": {"batch_size": 16, "critic_hidden": [64, 32], "actor_update": "simultaneous"},
    "training": {"episodes": 8, "eval_episodes": 2, "tensorboard": False},
    "monitor": {"enabled": True, "stop_threshold": THRESHOLD},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    f = d / "grid.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "name": "grid",
                "base": BASE,
                "axes": {"agent.actor_lr": [1e-4, 1e-1], "agent.critic_lr": [1e-3, 1e-2]},
                "seeds": 2,
            }
        )
    )
    res = run_sweep(f, d / "grid", workers=2, progress=False)
    assert res.done == 8
    return d / "grid"


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "rep"
    return build_report([sweep], out)


def independent_table1(sweep_dir):
    """Final return and all-actors stop (thresholded) per cell, straight from the files."""
    rows = []
    for rd in sorted((sweep_dir / "runs").iterdir()):
        cfg = yaml.safe_load((rd / "config.yaml").read_text())
        m = pd.read_parquet(rd / "metrics.parquet")
        final = m["eval_return"].dropna().tail(100).mean()
        # a finished run's parts are compacted into monitor/agents.parquet (monitor.compact)
        parts = sorted((rd / "monitor").glob("agents.parquet")) + sorted(
            (rd / "monitor" / "agents").glob("*.parquet")
        )
        mon = pd.concat([pd.read_parquet(p) for p in parts])
        actors = mon[mon["role"] == "actors"].sort_values("episode")
        stops = []
        for _, g in actors.groupby("agent"):
            stopped = (g["max_abs_change"] < THRESHOLD).to_numpy()
            eps = g["episode"].to_numpy()
            if not stopped[-1]:
                stops.append(math.nan)
            else:
                moving = np.flatnonzero(~stopped)
                stops.append(eps[moving[-1] + 1] if len(moving) else eps[0])
        all_stop = max(stops) if all(np.isfinite(stops)) else math.nan
        rows.append(
            {
                "client_lr": cfg["agent"]["actor_lr"],
                "master_lr": cfg["agent"]["critic_lr"],
                "final": final,
                "stop": all_stop,
            }
        )
    return pd.DataFrame(rows)


def test_table1_matches_an_independent_computation(sweep, report):
    t1 = pd.read_csv(report.out_dir / "tables" / "table1.csv")
    ref = independent_table1(sweep)
    assert len(t1) == 4 and (t1["seeds"] == 2).all()
    for (c, m), g in ref.groupby(["client_lr", "master_lr"]):
        row = t1[(t1["client_lr"] == c) & (t1["master_lr"] == m)].iloc[0]
        x = g["final"].to_numpy()
        assert row["final_return_mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert row["final_return_ci95"] == pytest.approx(T975[1] * x.std(ddof=1) / math.sqrt(2), rel=1e-9)
        s = g["stop"].dropna().to_numpy()
        assert row["actors_stop_thr_n"] == len(s)
        if len(s):
            assert row["actors_stop_thr_mean"] == pytest.approx(s.mean())
        assert row["frac_seeds_all_actors_stopped_thr"] == pytest.approx(len(s) / 2)
    # the threshold makes the low-lr cells stop and the high-lr cells keep moving
    assert t1.loc[t1["client_lr"] == 1e-4, "actors_stop_thr_n"].sum() > 0
    assert (t1.loc[t1["client_lr"] == 0.1, "actors_stop_thr_n"] == 0).all()


def test_every_figure_exists_and_is_not_blank(report):
    assert len(report.figures) >= 9
    for name, png in report.figures.items():
        assert png.exists() and png.with_suffix(".pdf").exists(), name
        img = mpimg.imread(png)
        assert img[..., :3].var() > 1e-3, f"{name} looks blank"


class _Tables(HTMLParser):
    """The cells of every <table> of a page, row by row."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_html_tables_are_built_from_the_tables_with_every_row_aligned(report):
    """The HTML tables come from the DataFrames (no Markdown re-parsed): a cell holding '|' (the
    survival table's '|dw| < threshold' header) stays one cell, every row has the header's width, and
    each table sits in a box that scrolls sideways."""
    page = (report.out_dir / "report.html").read_text()
    p = _Tables()
    p.feed(page)
    assert len(p.tables) >= 5
    for t in p.tables:
        assert len(t) >= 2 and all(len(row) == len(t[0]) for row in t), t[0]
    surv = pd.read_csv(report.out_dir / "tables" / "survival.csv")
    headers = [t[0] for t in p.tables]
    assert any(any("|dw|" in h for h in hs) for hs in headers), headers
    assert any(len(t) - 1 == surv.groupby(["sweep", "client_lr", "master_lr"]).ngroups for t in p.tables)
    assert page.count('<div class="table">') == len(p.tables)
    assert "overflow-x:auto" in page
    assert "\\|" not in page and "_(" not in page  # no Markdown escapes or emphasis left in the HTML


def test_the_final_return_note_says_how_many_evaluations_it_averages(sweep, report):
    """Short runs average fewer than 100 evaluations: the note says how many, from the runs."""
    n = load([sweep]).runs["final_evals"]
    assert 0 < n.min() < 100
    md = (report.out_dir / "report.md").read_text()
    here = f"{n.min()}" + (f" to {n.max()}" if n.max() != n.min() else "")
    assert f"Final return: mean of the last 100 evaluations, or all where fewer (here {here})" in md


def test_html_is_self_contained(report):
    html = (report.out_dir / "report.html").read_text()
    assert not re.search(r"https?://", html)
    assert "<link" not in html and "<script" not in html
    srcs = re.findall(r"src=[\"']([^\"']*)[\"']", html)
    assert len(srcs) == len(report.figures) and all(s.startswith("data:image/png;base64,") for s in srcs)
    md = (report.out_dir / "report.md").read_text()
    for p in report.figures.values():
        assert f"figures/{p.name}" in md
    for t in ("table1", "table2", "algorithms", "provenance", "excluded_runs"):
        assert (report.out_dir / "tables" / f"{t}.csv").exists()
    prov = pd.read_csv(report.out_dir / "tables" / "provenance.csv").set_index("item")["value"]
    assert "reference" in prov["RNG modes"] and "simultaneous" in prov["actor update orders"]


def test_partial_and_mixed_sweeps(sweep, tmp_path):
    part = tmp_path / "partial"
    shutil.copytree(sweep, part)
    runs = sorted((part / "runs").iterdir())
    st = json.loads((runs[0] / "status.json").read_text())
    st["state"] = "running"
    (runs[0] / "status.json").write_text(json.dumps(st))
    cfg0 = yaml.safe_load((runs[1] / "config.yaml").read_text())
    for rd in runs:  # remove one grid cell entirely
        c = yaml.safe_load((rd / "config.yaml").read_text())
        if (c["agent"]["actor_lr"], c["agent"]["critic_lr"]) == (
            cfg0["agent"]["actor_lr"],
            cfg0["agent"]["critic_lr"],
        ) and rd != runs[0]:
            shutil.rmtree(rd)
    res = build_report([part], tmp_path / "rep")
    # its status says running, but the process that wrote it is gone: shown as stale
    assert len(res.excluded_runs) == 1 and res.excluded_runs["status"].iloc[0] == "stale"
    t1 = res.tables["table1"]
    assert len(t1) <= 3 and t1["seeds"].sum() == len(list((part / "runs").iterdir())) - 1
    assert "Runs not included" in (tmp_path / "rep" / "report.md").read_text()
    # several sweeps, and several algorithms: comparison figures
    f = tmp_path / "algos.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "name": "algos",
                "base": BASE,
                "axes": {"agent.algorithm": ["ccm_madrl", "all_local"], "agent.reward_scale": [1.0, 0.5]},
                "seeds": 1,
            }
        )
    )
    run_sweep(f, tmp_path / "algos", workers=2, progress=False)
    both = build_report([sweep, tmp_path / "algos"], tmp_path / "rep2")
    assert "sweep_comparison" in both.figures and "algorithm_comparison" in both.figures
    algos = both.tables["algorithms"]
    assert set(algos["algorithm"]) == {"ccm_madrl", "all_local"}
    # a field varying within a sweep besides the grid splits the rows into variants
    labels = set(both.tables["table1"]["sweep"])
    assert {
        "algos [agent.mitigations.reward_scale=0.5]",
        "algos [agent.mitigations.reward_scale=1.0]",
        "grid",
    } <= labels
    assert "fixed policy" in " ".join(both.tables["table2"]["role"])


def test_table2_parameter_counts_come_from_the_networks(tmp_path):
    rd = tmp_path / "s" / "runs" / "r1"
    rd.mkdir(parents=True)
    (rd / "config.yaml").write_text(yaml.safe_dump({}))  # published defaults: N = 50
    rd2 = tmp_path / "s" / "runs" / "r2"
    rd2.mkdir()
    (rd2 / "config.yaml").write_text(yaml.safe_dump({"agent": {"algorithm": "maddpg"}}))
    write_missing_descriptions(tmp_path / "s")  # the training side describes the learners; the report reads
    t2 = table2(load(tmp_path / "s")).set_index(["algorithm", "role"])
    actor = BatchedActor(50)
    per_actor = sum(p[0].numel() for p in actor.parameters())
    assert per_actor == 7 * 64 + 64 + 64 * 32 + 32 + 32 * 3 + 3 == 2691
    assert t2.loc[("ccm_madrl", "client actor (x N)"), "parameters (one network)"] == per_actor
    assert t2.loc[("ccm_madrl", "client actor (x N)"), "parameters (all)"] == 50 * per_actor
    crit = sum(p.numel() for p in MasterCritic(50).parameters())
    assert crit == 510 * 512 + 512 + 512 * 128 + 128 + 128 + 1 == 327425
    assert t2.loc[("ccm_madrl", "master critic (x 1)"), "parameters (one network)"] == crit
    assert (
        t2.loc[("maddpg", "centralised critic (x 1)"), "parameters (one network)"]
        == sum(p.numel() for p in MasterCritic(50, per_agent=False).parameters())
        == 322305
    )


def test_cli_report(sweep, tmp_path, capsys):
    assert main(["report", str(sweep), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    assert (tmp_path / "r" / "report.html").exists() and "report:" in out.out
    assert "report: figure km_curves (" in out.err and "report: loaded 8 runs from 1 directory" in out.err  # progress


def test_every_figure_has_a_caption(report):
    from ccm_madrl.report import CAPTIONS
    from ccm_madrl.report.figures import FIGURES

    assert all(CAPTIONS.get(f.__name__) for f in FIGURES)
    md = (report.out_dir / "report.md").read_text()
    for name, p in report.figures.items():
        assert f"![{name}](figures/{p.name})\n\n{CAPTIONS[name]}" in md


def test_title_is_the_sweeps_name_and_copies_of_a_run_count_once(sweep, tmp_path):
    renamed = tmp_path / "some-folder"
    shutil.copytree(sweep, renamed)
    first = sorted((renamed / "runs").iterdir())[0]
    shutil.copytree(first, renamed / "runs" / "copy-of-a-run")  # a copied run directory
    with pytest.warns(UserWarning, match="3 copies of one run"):
        res = build_report([renamed, first], tmp_path / "rep")  # ... and the same run given again
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# Report: grid\n")
    assert "<h1>Report: grid</h1>" in (tmp_path / "rep" / "report.html").read_text()
    assert res.title == "grid" and len(res.duplicates) == 2
    assert res.duplicates["kept"].nunique() == 1 and str(first) in {
        *res.duplicates["kept"],
        *res.duplicates["dropped"],
    }
    assert res.tables["table1"]["seeds"].tolist() == [2, 2, 2, 2]  # not 4 in the copied run's cell
    assert "Duplicate runs ignored" in (tmp_path / "rep" / "report.md").read_text()


def test_figures_without_data_say_so(sweep, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from ccm_madrl.report import figures as figs
    from ccm_madrl.report.tables import runs_frame

    store = load(sweep)
    runs = runs_frame(store)
    runs = runs.assign(all_actors_stop_exact=np.nan, all_actors_stop_thr=np.nan)  # nothing stopped
    bars = []
    orig_colorbar = figs._colorbar
    monkeypatch.setattr(
        figs, "_colorbar", lambda fig, im, ax, **kw: (bars.append(im), orig_colorbar(fig, im, ax, **kw))
    )
    figs.stop_heatmap(runs, store, tmp_path)
    assert bars == [None, None]  # no colour bar over nothing (it drew -0.1..0.1)
    _, ax = plt.subplots()
    assert figs._grid_heatmap(ax, runs, lambda c: c["all_actors_stop_thr"], "t", "never") is None
    assert "no value in any cell" in ax.get_title() and {t.get_text() for t in ax.texts} == {"never"}
    stops = store.stops.assign(stop_exact=np.nan, stop_thr=np.nan)
    monkeypatch.setitem(store.__dict__, "stops", stops)  # the cached property's value
    with pytest.raises(figs.NoData, match="no agent stopped"):  # not drawn: listed under "Figures not drawn"
        figs.agent_stop_distribution(runs, store, tmp_path)
    assert not (tmp_path / "agent_stop_distribution.png").exists()


def test_a_report_of_standalone_runs_is_titled_after_their_directories(tmp_path):
    from types import SimpleNamespace

    from ccm_madrl.report import report_title

    runs = [tmp_path / "runs" / "quickstart-a1", tmp_path / "runs" / "quickstart-b2"]
    assert report_title(SimpleNamespace(sweep_names=[]), runs) == "quickstart-a1, quickstart-b2"
    assert report_title(SimpleNamespace(sweep_names=["", None]), runs[:1]) == "quickstart-a1"
    assert report_title(SimpleNamespace(sweep_names=["grid"]), runs) == "grid"
