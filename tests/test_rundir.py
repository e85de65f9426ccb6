"""The run directory's format lives in one module: paths, tolerant reads, atomic writes, states and
the final return."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pandas as pd

from ccm_madrl import rundir
from ccm_madrl.rundir import RunDir, SweepDir, effective_state, final_return


def test_final_return_is_the_mean_of_the_last_finite_evaluations():
    df = pd.DataFrame({"eval_return": [np.nan, 1.0, 2.0, np.nan, 4.0, 6.0]})
    assert final_return(df, last=2) == 5.0
    assert final_return(df) == np.mean([1.0, 2.0, 4.0, 6.0])
    assert np.isnan(final_return(pd.DataFrame({"train_return": [1.0]})))
    assert np.isnan(final_return(pd.DataFrame({"eval_return": [np.nan]})))


def test_status_states_and_the_stale_rule(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    assert rd.state() == "pending" and rd.status() == {}
    rd.status_path.write_text("{not json")  # a damaged status reads as absent, never raises
    assert rd.status() == {}
    now = time.time()
    alive = {"state": "running", "heartbeat_unix": now, "host": socket.gethostname(), "pid": os.getpid()}
    rd.write_status(alive)
    assert rd.state() == "running"
    assert effective_state(alive, now=now + rundir.STALE_AFTER_S + 1) == "stale"
    rd.write_status({"state": "done", "config_id": "abc", "x": float("nan")})
    assert rd.is_done("abc") and not rd.is_done("other")
    assert rd.status()["x"] is None  # strict JSON: NaN is written as null
    assert not list(rd.path.glob("*.tmp"))  # atomic writes leave no temporary file


def test_metrics_and_sweep_manifest_round_trip(tmp_path):
    sd = SweepDir(tmp_path)
    rd = sd.run("abc")
    rd.path.mkdir(parents=True)
    assert rd.metrics().empty
    rd.write_metrics(pd.DataFrame({"episode": [0, 1], "eval_return": [1.0, 3.0]}))
    assert rd.metrics()["eval_return"].tolist() == [1.0, 3.0]
    assert [r.name for r in sd.run_dirs()] == []  # no config.yaml: not a run yet
    rd.write_config("seed: 0\n")
    assert [r.name for r in sd.run_dirs()] == ["abc"]
    sd.write_manifest("s", [{"id": "abc", "status": "pending"}])
    assert sd.manifest() == {"sweep": "s", "runs": [{"id": "abc", "status": "pending"}]}
    assert set(rundir.MANIFEST_STATES) >= {"pending", "queued", "interrupted", "done", "failed"}


def test_a_finished_cross_run_is_read_back_through_the_run_dir(tmp_path):
    """A finished ``kind: cross`` run is not re-run: its summary comes from the run directory (this
    path needs none of the cross libraries), with the cross runs' final return (last 3 evaluations)."""
    from ccm_madrl.experiment.config import build_config
    from ccm_madrl.experiment.cross import FINAL_EVALS
    from ccm_madrl.experiment.runner import train

    cfg = build_config(
        {
            "kind": "cross",
            "cross": {
                "library": "sb3",
                "algo": "td3",
                "env": "Pendulum-v1",
                "total_steps": 1000,
                "actor_lr": 1e-3,
            },
        }
    )
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.write_metrics(pd.DataFrame({"eval_return": [0.0, np.nan, 1.0, 2.0, 3.0]}))
    rd.write_status({"state": "done", "config_id": cfg.id(), "episodes_done": 5})
    s = train(cfg, rd.path, progress=False, quiet=True)
    assert FINAL_EVALS == 3 and s.final_return == 2.0 and s.episodes_done == 5 and s.state == "done"


# ------------------------------------------------------------------------------ safe writes
def test_writes_go_through_a_fresh_temporary_file_never_a_link(tmp_path):
    """A received run directory may hold links at the names a writer uses: the fixed temporary names
    of earlier versions are ignored (the temporary file is created exclusively under a fresh name),
    a link at a file's own name or a linked directory inside the run is refused, and the file the
    link points at is left as it was."""
    import pytest

    outside = tmp_path / "outside.txt"
    outside.write_text("the user's file\n")
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    for name in ("status.json.tmp", "metrics.parquet.tmp", "config.yaml.tmp"):
        (rd.path / name).symlink_to(outside)
    rd.write_status({"state": "running"})
    rd.write_metrics(pd.DataFrame({"episode": [0]}))
    rd.write_config("seed: 0\n")
    assert outside.read_text() == "the user's file\n"
    assert rd.status() == {"state": "running"} and rd.metrics()["episode"].tolist() == [0]
    assert not (rd.path / "status.json").is_symlink()
    with pytest.raises(rundir.UnsafePath, match=r"\.tmp: is a symbolic link \(and 2 more\)"):
        rd.check_safe()  # a run starting in this directory refuses it as a whole

    (rd.path / "provenance.json").symlink_to(outside)
    with pytest.raises(rundir.UnsafePath, match="provenance.json: is a symbolic link"):
        rd.write_provenance({"x": 1})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (rd.path / "monitor").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(rundir.UnsafePath, match="monitor: is a symbolic link"):
        rundir.write_json(rd.monitor_dir / "summary.json", {}, rd.path)
    with pytest.raises(rundir.UnsafePath, match="leads outside"):
        rundir.write_json(tmp_path / "x.json", {}, rd.path)
    assert outside.read_text() == "the user's file\n" and not list(elsewhere.iterdir())


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    import pytest

    path = tmp_path / "status.json"
    rundir.write_json(path, {"state": "done"})

    def broken(f):
        f.write(b"{half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        rundir.atomic_write(path, broken)
    assert rundir.read_json(path) == {"state": "done"} and [p.name for p in tmp_path.iterdir()] == [
        "status.json"
    ]


def test_a_sweep_directory_with_a_linked_run_is_refused(tmp_path):
    import pytest

    target = tmp_path / "target"
    target.mkdir()
    sd = SweepDir(tmp_path / "s")
    sd.runs_dir.mkdir(parents=True)
    sd.check_safe()  # no links: fine
    (sd.runs_dir / "abc123").symlink_to(target, target_is_directory=True)
    with pytest.raises(rundir.UnsafePath, match="abc123: is a symbolic link"):
        sd.check_safe()


def test_a_name_is_a_label_inside_its_root(tmp_path):
    import pytest

    assert rundir.inside(tmp_path, "ccm-0123") == tmp_path / "ccm-0123"
    for name in ("../x", "/abs/x", "a/../../x", ".", ""):
        with pytest.raises(rundir.UnsafePath, match="leads outside"):
            rundir.inside(tmp_path, name)
