"""The command line as a newcomer meets it: one vocabulary of run states, progress counters that
agree, no wrapping off a terminal, no NumPy warnings from ``bench argmax``, one version."""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import ccm_madrl
from ccm_madrl import rundir
from ccm_madrl.cli import main
from ccm_madrl.sweep.progress import SweepProgress

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = ["training.episodes=3", "training.eval_episodes=1", "env.max_steps=2", "env.n_agents=3"]


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 9])
def test_bench_argmax_statistics_warn_for_no_number_of_steps(steps):
    from ccm_madrl.bench.argmax import row_summary

    rng = np.random.default_rng(0)
    rows = rng.integers(100, 200, steps).astype(float)
    per = np.stack([np.arange(steps), rows, rows // 2, np.full(steps, 0.01)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning fails the test
        out = row_summary(per)
    assert out["training_steps"] == steps
    assert len(out["rows_skipped_fraction_by_quarter"]) == min(4, steps)
    assert all(np.isfinite(out["rows_skipped_fraction_by_quarter"]))
    with pytest.raises(ValueError, match="trained no step"):
        row_summary(per[:0])


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().strip().splitlines()


def test_progress_counters_agree_when_a_run_ends_early():
    """Two runs of 10 episodes; one stops early after 6: at the end both counters say all done."""
    out = io.StringIO()
    with SweepProgress(True, "s", runs=2, skipped=0, total_eps=20, eps_done=0, stream=out) as bar:
        bar.episodes(12)
        bar.run_finished("done", episodes_done=6, planned=10, eps_now=12)
        assert _lines(out)[-1].startswith("s [a run done]: runs 1/2 finished; episodes 12/16")
        bar.run_finished("done", episodes_done=10, planned=10, eps_now=16)
    assert _lines(out)[-1].startswith("s [end]: runs 2/2 finished; episodes 16/16 (100%)")


def test_a_finished_sweep_run_again_reports_the_episodes_its_runs_ended_at(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sweep", SMOKE, "--out", str(out), "--workers", "1", *TINY]
    assert main([*args, "--no-progress"]) == 0
    status = out / "runs" / next(p.name for p in (out / "runs").iterdir()) / "status.json"
    st = json.loads(status.read_text())
    status.write_text(
        json.dumps({**st, "episodes_done": 2, "early_stopped": True})
    )  # as an early stop leaves it
    capsys.readouterr()
    assert main(args) == 0  # stdout is not a terminal here: plain lines
    end = [ln for ln in capsys.readouterr().out.splitlines() if "[end]" in ln]
    assert len(end) == 1 and "runs 4/4 finished; episodes 11/11 (100%)" in end[0], end


def test_the_last_line_of_train_keeps_the_run_path_whole_off_a_terminal(tmp_path, capsys):
    rd = tmp_path / ("a-rather-long-directory-name-" * 3) / "run"
    assert main(["train", "--run-dir", str(rd), "--no-progress", *TINY, "monitor.enabled=false"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(last) > 80 and last.startswith("done: 3 episodes") and last.endswith(f"-> {rd}")


def test_run_states_are_one_vocabulary(tmp_path, capsys):
    """The dry run prints ``pending`` for a run not started, the manifest's word; every state any of
    them can show is listed on docs/run_store.md."""
    assert main(["sweep", SMOKE, "--dry-run", "--out", str(tmp_path / "none")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "4 runs: 4 pending" and all(ln.split()[1] == "pending" for ln in lines[:-1])
    doc = (ROOT / "docs" / "run_store.md").read_text()
    doc = doc[doc.index("### Run states") :].split("\n## ")[0]
    listed = set(re.findall(r"^\| `([a-z-]+)` \|", doc, re.M))
    assert {*rundir.RUN_STATES, *rundir.MANIFEST_STATES, "stale", "unknown"} == listed


def test_one_version_everywhere():
    """The package, the changelog's first section and the docs' "before 0.2.0" tell one story."""
    assert ccm_madrl.__version__ == "0.2.0"
    meta = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', meta, re.M) and not re.search(r'^version = "', meta, re.M)
    assert 'version = { attr = "ccm_madrl.__version__" }' in meta  # [tool.setuptools.dynamic]
    first = next(ln for ln in (ROOT / "CHANGELOG.md").read_text().splitlines() if ln.startswith("## "))
    assert first == f"## {ccm_madrl.__version__}"
    version = tuple(int(x) for x in ccm_madrl.__version__.split("."))
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for v in re.findall(r"(?:before|after) (\d+\.\d+\.\d+)", doc.read_text()):
            assert tuple(int(x) for x in v.split(".")) <= version, (doc.name, v)
