"""Hydra-style command lines: bare KEY=VALUE overrides (``--set``) and ``-m KEY=a,b`` (``--axis``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccm_madrl.cli import UsageError, hydra_style, main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "c.yaml", "agent.actor_lr=0.1"], ["train", "c.yaml", "--set", "agent.actor_lr=0.1"]),
        (["train", "seed=3", "c.yaml"], ["train", "--set", "seed=3", "c.yaml"]),
        (["sweep", "s.yaml", "--set", "a.b=1", "x=2"], ["sweep", "s.yaml", "--set", "a.b=1", "--set", "x=2"]),
        (
            ["train", "c.yaml", "--run-dir", "x=y"],
            ["train", "c.yaml", "--run-dir", "x=y"],
        ),  # an option's value
        (
            ["sweep", "s.yaml", "-m", "agent.actor_lr=1e-3,0.1", "seed=0,1,2", "training.episodes=3"],
            ["sweep", "s.yaml", "--axis", "agent.actor_lr=[1e-3, 0.1]", "--seeds", "[0, 1, 2]"]
            + ["--set", "training.episodes=3"],
        ),
        (
            ["sweep", "s.yaml", "--multirun", "agent.critic_hidden=[64, 32],[32]"],
            ["sweep", "s.yaml", "--axis", "agent.critic_hidden=[[64, 32], [32]]"],
        ),
        (["sweep", "s.yaml", "a=1,2"], ["sweep", "s.yaml", "--set", "a=1,2"]),  # no -m: one value
        (["report", "a=b"], ["report", "a=b"]),  # other commands are left alone
    ],
)
def test_bare_overrides_and_multirun_become_set_and_axis(argv, expected):
    assert hydra_style(argv) == expected


def test_multirun_of_train_is_refused():
    with pytest.raises(UsageError, match="-m/--multirun: train runs one config"):
        hydra_style(["train", "-m", "agent.actor_lr=0.1,1"])


def test_multirun_sweep_runs_the_grid(tmp_path):
    out = tmp_path / "out"
    rc = main(
        ["sweep", SMOKE, "--out", str(out), "--workers", "1", "--no-progress", "-m"]
        + ["agent.actor_lr=0.001,0.01", "seed=5", "training.episodes=2"]
    )
    assert rc == 0
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    assert sorted(
        (r["overrides"]["agent.actor_lr"], r["overrides"]["seed"], r["episodes_done"]) for r in runs
    ) == [
        (0.001, 5, 2),
        (0.01, 5, 2),
    ]  # seed=5 without a comma replaces the sweep's seeds by [5] (Hydra's rule for a swept key)


def test_bare_override_trains(tmp_path):
    rd = tmp_path / "run"
    assert (
        main(
            ["train", SMOKE.replace("smoke.yaml", "base.yaml"), "--run-dir", str(rd), "--no-progress"]
            + ["training.episodes=2", "training.eval_episodes=1", "env.max_steps=2", "env.n_agents=3"]
            + ["monitor.enabled=false"]
        )
        == 0
    )
    assert json.loads((rd / "status.json").read_text())["episodes_done"] == 2


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "agent.actor_lr=-1"], "agent.actor_lr: Input should be greater than 0"),
        (["train", "agent.nope=1"], "agent.nope"),
        (["train", "agent.actor-lr=1"], "'agent.actor-lr=1': expected KEY=VALUE"),
        (["sweep", SMOKE, "--dry-run", "-m", "agent.actor_lr=0.1,"], "agent.actor_lr: empty value"),
        (
            ["sweep", SMOKE, "--dry-run", "-m", "agent.optimizer=adam,adamw"],
            "agent.optimizer: must be one of",
        ),
    ],
)
def test_bad_overrides_name_the_field_and_exit_2(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--gpus-per-run", "1"], "--gpus-per-run: only for --backend ray or slurm"),
        (["--backend", "ray", "--cpus-per-run", "0"], "--cpus-per-run: must be > 0"),
        (["--backend", "slurm", "--gpus-per-run", "-1"], "--gpus-per-run: must be >= 0"),
        (["--backend", "slurm", "--slurm-opt", "gres"], "--slurm-opt 'gres': expected KEY=VALUE"),
        (["--backend", "slurm", "--slurm-time", "0"], "--slurm-time: minutes, must be >= 1"),
        (
            ["--backend", "slurm", "--gpus-per-run", "0.5"],
            "--gpus-per-run: whole numbers under --backend slurm",
        ),
    ],
)
def test_bad_backend_options_name_the_option_and_write_nothing(tmp_path, extra, match, capsys):
    assert main(["sweep", SMOKE, "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]
    assert not (tmp_path / "out").exists()


def test_a_command_line_seed_replaces_the_files_seeds(capsys):
    """smoke.yaml sets ``seeds: 2``; ``seed=7`` on the command line (with or without -m) leaves one
    run per axis value, at seed 7."""
    for extra in (["-m", "seed=7"], ["seed=7"]):
        assert main(["sweep", SMOKE, "--dry-run", *extra]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[-1] == "2 runs: 2 not-started", extra
        assert all(line.endswith("seed=7") for line in lines[:-1]), lines


@pytest.mark.parametrize(
    "text, value",
    [("1e-4", 1e-4), ("2E5", 2e5), ("1.5e3", 1500.0), ("-3e+2", -300.0), ("[1e-4, 0.1]", [1e-4, 0.1]),
     ("1e5x", "1e5x"), ("12", 12), ("adam", "adam")],  # fmt: skip
)
def test_override_values_are_typed_as_yaml_1_2(text, value):
    from ccm_madrl.config.experiment import parse_value

    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_an_axis_of_the_command_line_is_stored_as_numbers(capsys):
    """``1e-4`` is a number (YAML 1.1 read it as the string '1e-4')."""
    assert main(["sweep", SMOKE, "--dry-run", "-m", "agent.actor_lr=1e-4,1e-3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert {line.split()[2] for line in lines[:-1]} == {"agent.actor_lr=0.0001", "agent.actor_lr=0.001"}
