"""The training loop: outputs, provenance, resume after a hard crash, config errors, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ccm_madrl.cli import main
from ccm_madrl.experiment import ConfigError, Trainer, build_config, load_config
from ccm_madrl.experiment.runner import RunDirConflict

SMALL = {
    "env": {"n_agents": 12, "max_steps": 4},
    "agent": {"batch_size": 16, "critic_hidden": [64, 32], "actor_update": "simultaneous"},
    "training": {"episodes": 7, "eval_episodes": 3, "checkpoint_every": 2, "tensorboard": False},
    "monitor": {"enabled": False},
}


def small(**over) -> dict:
    d = json.loads(json.dumps(SMALL))
    for k, v in over.items():
        sec, _, field = k.partition(".")
        d.setdefault(sec, {})[field] = v
    return d


def test_run_directory_contents(tmp_path):
    cfg = build_config(small(**{"training.tensorboard": True}))
    summary = Trainer(cfg, tmp_path / "run", progress=False).run()
    run = tmp_path / "run"
    df = pd.read_parquet(run / "metrics.parquet")
    assert len(df) == 7 and df["episode"].tolist() == list(range(7))
    assert np.isnan(df["eval_return"].iloc[0]) and df["eval_return"].iloc[1:].notna().all()
    assert df["trained"].tolist() == [False] + [True] * 6  # first training step after episode 2
    assert summary.final_return == pytest.approx(df["eval_return"].dropna().mean())
    prov = json.loads((run / "provenance.json").read_text())
    for key in ("version", "commit", "device", "rng_mode", "actor_update", "seed", "config_id", "torch"):
        assert key in prov
    assert prov["rng_mode"] == "reference" and prov["actor_update"] == "simultaneous"
    assert build_config(yaml.safe_load((run / "config.yaml").read_text())) == cfg
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    assert list((run / "tb").glob("events.*"))


def test_rerun_of_a_finished_run_does_nothing(tmp_path):
    cfg = build_config(small())
    Trainer(cfg, tmp_path / "r", progress=False).run()
    mtime = (tmp_path / "r" / "metrics.parquet").stat().st_mtime_ns
    s = Trainer(cfg, tmp_path / "r", progress=False).run()
    assert s.state == "done" and (tmp_path / "r" / "metrics.parquet").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("rng_mode, update", [("reference", "simultaneous"), ("independent", "sequential")])
def test_resume_after_hard_crash_equals_uninterrupted_run(tmp_path, monkeypatch, rng_mode, update):
    cfg = build_config(
        small(**{"training.episodes": 9}), [f"rng_mode={rng_mode}", f"agent.actor_update={update}"]
    )
    full = Trainer(cfg, tmp_path / "full", progress=False)
    full.run()

    crashed = Trainer(cfg, tmp_path / "crash", progress=False)
    original = Trainer.episode

    def dying(self, ep):
        if ep == 5:  # like kill -9: no handler runs, nothing is written
            raise SystemExit("killed")
        return original(self, ep)

    monkeypatch.setattr(Trainer, "episode", dying)
    with pytest.raises(SystemExit):
        crashed.run()
    assert len(pd.read_parquet(tmp_path / "crash" / "metrics.parquet")) == 4  # checkpoint at 4
    monkeypatch.setattr(Trainer, "episode", original)
    resumed = Trainer(cfg, tmp_path / "crash", progress=False)
    resumed.run()
    a = pd.read_parquet(tmp_path / "full" / "metrics.parquet")
    b = pd.read_parquet(tmp_path / "crash" / "metrics.parquet")
    cols = [c for c in a.columns if not c.startswith("time_")]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    for p, q in zip(full.learner.actors.parameters(), resumed.learner.actors.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(full.learner.critic.parameters(), resumed.learner.critic.parameters()):
        assert torch.equal(p, q)


def test_run_dir_of_another_experiment_is_refused(tmp_path):
    Trainer(build_config(small()), tmp_path / "r", progress=False).run()
    with pytest.raises(RunDirConflict, match="different experiment"):
        Trainer(build_config(small(**{"agent.actor_lr": 0.1})), tmp_path / "r", progress=False).run()


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["agent.actor_lr=-1"], r"agent\.actor_lr: Input should be greater than 0 \(got -1\)"),
        (
            ["agent.optimizer=adagrad"],
            r"agent\.optimizer: must be one of 'adam', 'rmsprop' or 'sgd' \(got 'adagrad'\)",
        ),
        (["agent.lr=0.1"], r"agent\.lr: unknown key"),
        (["training.episodes=many"], r"training\.episodes: .*integer"),
        (["rng_mode=global"], r"rng_mode: must be one of 'reference' or 'independent'"),
        (["env.mode=H3"], r"env\.mode"),
        (["seed"], r"expected KEY=VALUE"),
    ],
)
def test_config_errors_name_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_config({}, overrides)


def test_yaml_config_and_overrides(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(small()))
    cfg = load_config(f, ["agent.actor_lr=0.01", "seed=3"])
    assert cfg.agent.actor_lr == 0.01 and cfg.seed == 3 and cfg.env.n_agents == 12
    assert cfg.id() == load_config(f, ["seed=3", "agent.actor_lr=0.01"]).id()
    assert cfg.id() != load_config(f, ["seed=4", "agent.actor_lr=0.01"]).id()
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "bad.yaml")


def test_cli_train_and_bad_input(tmp_path, capsys):
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(small(**{"training.episodes": 3})))
    assert main(["train", str(f), "--run-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    assert len(pd.read_parquet(tmp_path / "out" / "metrics.parquet")) == 3
    assert "done" in capsys.readouterr().out
    assert main(["train", str(f), "--set", "agent.actor_lr=zero", "--run-dir", str(tmp_path / "x")]) == 2
    assert "agent.actor_lr" in capsys.readouterr().err
