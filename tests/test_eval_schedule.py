"""``training.eval_every``: which episodes are evaluated, missing values elsewhere, the final return,
what it changes in each RNG mode, and its validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ccm_madrl.cli import main
from ccm_madrl.experiment import ConfigError, Trainer, build_config
from ccm_madrl.rundir import final_return
from ccm_madrl.store import Store

SMALL = {
    "env": {"n_agents": 8, "max_steps": 4},
    "agent": {"batch_size": 8, "critic_hidden": [32, 16], "actor_update": "simultaneous"},
    "training": {"episodes": 9, "eval_episodes": 3, "tensorboard": False},
    "monitor": {"enabled": False},
}


def run(tmp_path, name: str, eval_every: int, rng_mode: str = "reference") -> pd.DataFrame:
    cfg = build_config({**SMALL, "rng_mode": rng_mode}, [f"training.eval_every={eval_every}"])
    Trainer(cfg, tmp_path / name, progress=False, quiet=True).run()
    return pd.read_parquet(tmp_path / name / "metrics.parquet")


def test_evaluated_episodes_missing_values_and_final_return(tmp_path):
    df = run(tmp_path, "k3", 3)
    evaluated = df.loc[df["eval_return"].notna(), "episode"].tolist()
    assert evaluated == [1, 4, 7, 8]  # from episodes_before_train (1), every third, and the last
    skipped = df[~df["episode"].isin(evaluated)]
    for col in ("eval_return", "eval_return_std", "eval_constraint_frac", "eval_time_penalty_frac"):
        assert skipped[col].isna().all(), col  # missing, not repeated
    assert df["trained"].sum() == 8  # training is unchanged: every episode after the first
    fr = final_return(df)
    assert np.isfinite(fr) and fr == pytest.approx(df["eval_return"].dropna().mean())
    # the store's summary reads the same final return
    runs = Store(tmp_path / "k3").runs
    assert runs["final_return"].iloc[0] == pytest.approx(fr)


def test_reference_mode_skipped_evaluations_change_the_training_stream(tmp_path):
    """Reference mode: an evaluation re-seeds the shared legacy stream, so the training episode
    after a skipped evaluation draws other tasks; up to the first skipped evaluation the runs agree."""
    a, b = run(tmp_path, "k1", 1), run(tmp_path, "k3", 3)
    assert a["train_return"].iloc[:2].tolist() == b["train_return"].iloc[:2].tolist()
    assert a["eval_return"].iloc[1] == b["eval_return"].iloc[1]
    assert a["train_return"].iloc[2] != b["train_return"].iloc[2]


def test_independent_mode_training_does_not_depend_on_the_schedule(tmp_path):
    a, b = run(tmp_path, "k1", 1, "independent"), run(tmp_path, "k3", 3, "independent")
    assert a["train_return"].tolist() == b["train_return"].tolist()
    both = b["eval_return"].notna()
    assert a.loc[both, "eval_return"].tolist() == b.loc[both, "eval_return"].tolist()


def test_eval_every_must_be_positive(tmp_path, capsys):
    with pytest.raises(
        ConfigError, match=r"training\.eval_every: Input should be greater than or equal to 1"
    ):
        build_config({}, ["training.eval_every=0"])
    assert main(["train", "--set", "training.eval_every=0", "--run-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.eval_every" in err[0]
