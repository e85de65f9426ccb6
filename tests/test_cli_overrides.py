"""Hydra-style command lines: bare KEY=VALUE overrides (``--set``) and ``-m KEY=a,b`` (``--axis``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

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
        assert lines[-1] == "2 runs: 2 pending", extra
        assert all(line.endswith("seed=7") for line in lines[:-1]), lines


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-4", 1e-4),
        ("2E5", 2e5),
        ("1.5e3", 1500.0),
        ("-3e+2", -300.0),
        ("[1e-4, 0.1]", [1e-4, 0.1]),
        ("1e5x", "1e5x"),
        ("12", 12),
        ("adam", "adam"),
    ],  # fmt: skip
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


# ------------------------------------------------------------------ Hydra's override grammar (subset)
BASE = str(ROOT / "configs" / "base.yaml")


def _dry_run(capsys, *extra) -> list[str]:
    assert main(["sweep", SMOKE, "--dry-run", *extra]) == 0
    return capsys.readouterr().out.strip().splitlines()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["sweep", "s.yaml", "-m", "seed=range(0,3)"], ["sweep", "s.yaml", "--seeds", "[0, 1, 2]"]),
        (["sweep", "s.yaml", "-m", "a.b=range(1, 7, 2)"], ["sweep", "s.yaml", "--axis", "a.b=[1, 3, 5]"]),
        (
            ["sweep", "s.yaml", "-m", "a.b=range(0, 1, 0.25)"],
            ["sweep", "s.yaml", "--axis", "a.b=[0.0, 0.25, 0.5, 0.75]"],
        ),
        (["sweep", "s.yaml", "-m", "a.b=range(5, 0, -2)"], ["sweep", "s.yaml", "--axis", "a.b=[5, 3, 1]"]),
        (
            ["sweep", "s.yaml", "-m", "a.b=choice(adam, sgd)"],
            ["sweep", "s.yaml", "--axis", "a.b=[adam, sgd]"],
        ),
        (
            ["sweep", "s.yaml", "-m", "a.b=choice([1, 2],[3])"],
            ["sweep", "s.yaml", "--axis", "a.b=[[1, 2], [3]]"],
        ),
        (["sweep", "s.yaml", "-m", "+a.new=1,2"], ["sweep", "s.yaml", "--axis", "a.new=[1, 2]"]),
        (
            ["train", "c.yaml", "+a.b=1", "++a.c=2", "~a.d", "~a.e=3"],
            ["train", "c.yaml", "--set", "+a.b=1", "--set", "++a.c=2", "--set", "~a.d", "--set", "~a.e=3"],
        ),
    ],  # fmt: skip
)
def test_range_choice_add_and_remove_are_read_as_hydra_reads_them(argv, expected):
    assert hydra_style(argv) == expected


@pytest.mark.parametrize(
    "argv, match",
    [
        (["sweep", "s.yaml", "a.b=range(0,3)"], "a.b=range(0,3): range() is a sweep; run it with"),
        (["sweep", "s.yaml", "a.b=choice(1,2)"], "choice() is a sweep"),
        (["sweep", "s.yaml", "-m", "a.b=range(3)"], "expected range(start, stop[, step]) of numbers"),
        (["sweep", "s.yaml", "-m", "a.b=range(0, x)"], "expected range(start, stop[, step]) of numbers"),
        (["sweep", "s.yaml", "-m", "a.b=range(0, 3, 0)"], "the step must not be 0"),
        (["sweep", "s.yaml", "-m", "a.b=range(3, 0)"], "an empty range"),
    ],
)
def test_bad_sweep_functions_are_one_line(argv, match):
    with pytest.raises(UsageError, match=re.escape(match)):
        hydra_style(argv)


def test_a_range_and_a_choice_make_the_grid(capsys):
    """``-m agent.actor_lr=choice(1e-4, 1e-3) seed=range(0,3)``: 2 x 3 runs, numbers stored as numbers."""
    lines = _dry_run(capsys, "-m", "agent.actor_lr=choice(1e-4, 1e-3)", "seed=range(0,3)")
    assert lines[-1] == "6 runs: 6 pending"
    assert sorted(line.split(maxsplit=2)[2] for line in lines[:-1]) == sorted(
        f"agent.actor_lr={lr} seed={s}" for lr in (0.0001, 0.001) for s in range(3)
    )


def test_plus_adds_a_key_the_file_lacks_and_refuses_one_it_sets(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("training: {episodes: 7}\n")
    assert main(["train", str(cfg), "--cfg", "job", "+agent.critic_lr=0.5", "++training.episodes=9"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["agent"]["critic_lr"] == 0.5 and out["training"]["episodes"] == 9
    assert main(["train", str(cfg), "--cfg", "job", "+training.episodes=8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"training.episodes is already set in {cfg}" in err[0]
    assert "on the command line" in err[0]


def test_tilde_removes_a_key_back_to_its_default(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("training: {episodes: 7, eval_episodes: 3}\nagent: {critic_lr: 0.5}\n")
    assert main(["train", str(cfg), "--cfg", "job", "~training.episodes", "~agent.critic_lr=0.5"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["training"]["episodes"] == 2000 and out["training"]["eval_episodes"] == 3
    assert out["agent"]["critic_lr"] == 1e-3  # the schema's defaults
    for bad, match in [
        ("~training.checkpoint_every", f"training.checkpoint_every is not set in {cfg} (nothing to remove)"),
        ("~agent.critic_lr=0.1", f"agent.critic_lr is 0.5 in {cfg}, not 0.1"),
    ]:
        assert main(["train", str(cfg), "--cfg", "job", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err


def test_tilde_of_an_axis_removes_the_axis(capsys):
    lines = _dry_run(capsys, "~agent.actor_lr")
    assert lines[-1] == "2 runs: 2 pending" and [line.split()[2] for line in lines[:-1]] == [
        "seed=0",
        "seed=1",
    ]


@pytest.mark.parametrize(
    "argv, match",
    [
        (
            ["train", BASE, "agent.actor_lr=banana"],
            "invalid configuration on the command line: agent.actor_lr:",
        ),
        (
            ["train", BASE, "+agent.new_key=1"],
            "invalid configuration on the command line: agent.new_key: unknown key",
        ),
        (
            ["train", "agent.actor_update=both"],
            "invalid configuration on the command line: agent.variant.actor_update",
        ),
        (["sweep", SMOKE, "--dry-run", "agent.actor_lr=banana"], "invalid sweep value on the command line"),
        (
            ["sweep", SMOKE, "--dry-run", "-m", "agent.critic_lr=0.1,-1"],
            "invalid sweep value on the command line",
        ),
        (
            ["sweep", SMOKE, "--dry-run", "--axis", "agent.optimizer=[adagrad]"],
            "invalid sweep value on the command line",
        ),
        (["sweep", SMOKE, "--dry-run", "seed=-1"], "invalid configuration on the command line: seeds:"),
        (["sweep", SMOKE, "--dry-run", "+seed=1"], f"seed is already set in {SMOKE}"),
        (["sweep", SMOKE, "--dry-run", "~seed"], "the seeds cannot be removed"),
    ],  # fmt: skip
)
def test_errors_from_the_command_line_say_so(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_errors_from_a_file_name_the_file(capsys, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("agent: {actor_lr: banana}\n")
    assert main(["train", str(cfg), "training.episodes=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"invalid configuration in {cfg}: agent.actor_lr:" in err[0]
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: s\naxes: {agent.actor_lr: [banana]}\n")
    assert main(["sweep", str(sweep), "--dry-run", "training.episodes=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "agent.actor_lr" in err[0] and f"[{sweep}]" in err[0]
    assert "training.episodes" in err[0] and "[the command line]" in err[0]  # each field says where


def test_cfg_job_prints_the_resolved_config_and_runs_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", BASE, "--cfg", "job", "agent.actor_lr=1e-4", "seed=4"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    from ccm_madrl.experiment.config import ExperimentConfig, load_config

    assert ExperimentConfig.model_validate(out) == load_config(BASE, ["agent.actor_lr=1e-4", "seed=4"])
    assert (
        main(["sweep", SMOKE, "--cfg", "job", "-m", "seed=range(3, 5)", "agent.critic_lr=choice(0.1, 0.2)"])
        == 0
    )
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["name"] == "smoke" and doc["seeds"] == [3, 4]
    assert doc["axes"] == {"agent.actor_lr": [1e-4, 0.1], "agent.critic_lr": [0.1, 0.2]}
    assert (
        doc["base"]["env"]["n_agents"] == 12 and doc["base"]["training"]["eval_every"] == 1
    )  # defaults filled
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written
