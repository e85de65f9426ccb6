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
    assert rd.state() == "not-started" and rd.status() == {}
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
