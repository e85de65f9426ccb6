"""Whole-episode parity with the published code (trajectory golden files, ``ccm-madrl parity``)."""

from __future__ import annotations

import json

import pytest

from ccm_madrl.cli import main
from ccm_madrl.parity import check_file

FILES = ("trajectory_a_independent.json", "trajectory_a_published_44fba1b.json")


@pytest.mark.parametrize("name", FILES)
def test_parity_passes_on_the_trajectory_files(name, capsys):
    from conftest import DATA

    assert main(["parity", str(DATA / name)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out


def _truncated(name: str, episodes: int, tmp_path, **changes) -> tuple[dict, object]:
    from conftest import DATA

    g = json.loads((DATA / name).read_text())
    g["episodes"] = episodes
    g["eval_returns"] = g["eval_returns"][: episodes - 1]
    g["train_returns"] = g["train_returns"][: episodes - 1]
    g.update(changes)
    path = tmp_path / f"t{episodes}.json"
    path.write_text(json.dumps(g))
    return g, path


def test_a_perturbed_trajectory_fails_and_names_the_first_differing_episode(tmp_path, capsys):
    g, _ = _truncated(FILES[1], 5, tmp_path)
    g["eval_returns"][2] *= 1 + 1e-5  # evaluation before episode 3
    g["train_returns"][1] *= 1 + 2e-6  # training episode 1
    g["train_returns"][3] *= 1 - 1e-3
    path = tmp_path / "perturbed.json"
    path.write_text(json.dumps(g))
    rep = check_file(path)
    assert not rep.passed
    ev, tr = rep.checks[0], next(c for c in rep.checks if c.quantity.startswith("train returns"))
    assert (
        not ev.passed and "first beyond rtol 1e-06: eval_returns[2], evaluation before episode 3" in ev.note
    )
    assert not tr.passed and "first beyond rtol 1e-06: train_returns[1], training episode 1" in tr.note
    detail = [c for c in rep.checks if c.quantity.strip().startswith("eval_returns[2]")]
    assert detail and "no single near-tie flip reproduces it" in detail[0].note
    train1 = [c for c in rep.checks if c.quantity.strip().startswith("train_returns[1]")]
    assert train1 and "no near-tie found: not float32 noise" in train1[0].note
    assert main(["parity", str(path)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_any_length_works_a_shorter_run_passes(tmp_path):
    _, path = _truncated(FILES[1], 4, tmp_path)
    rep = check_file(path)
    assert rep.passed, [c.note for c in rep.checks]
    assert "all 3 within rtol" in rep.checks[0].note


@pytest.mark.parametrize(
    "change, drop, message",
    [
        ({"code_commit": "0123456789"}, None, "code_commit: unknown commit '0123456789'"),
        ({"eval_returns": [1.0]}, None, "eval_returns: expected a list of episodes - 1 = 2 numbers"),
        ({}, "seed", "seed: missing from the trajectory file"),
    ],
)
def test_bad_trajectory_files_exit_2_naming_the_field(tmp_path, capsys, change, drop, message):
    g, path = _truncated(FILES[1], 3, tmp_path, **change)
    if drop:
        del g[drop]
        path.write_text(json.dumps(g))
    assert main(["parity", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_rtol_loosens_the_trajectory_comparison(tmp_path, capsys):
    g, _ = _truncated(FILES[1], 4, tmp_path)
    g["eval_returns"][1] *= 1 + 1e-5
    g["train_returns"][2] *= 1 - 2e-5
    path = tmp_path / "perturbed.json"
    path.write_text(json.dumps(g))
    strict = check_file(path)
    assert not strict.passed and strict.checks[0].tolerance.value == 1e-6 and strict.checks[0].margin > 1
    loose = check_file(path, rtol=1e-4)
    assert loose.passed and loose.rtol == 1e-4, [c.note for c in loose.checks]
    assert "all 3 within rtol 0.0001" in loose.checks[0].note
    assert all(c.tolerance.value == 1e-4 and c.margin < 1 for c in loose.checks)
    capsys.readouterr()
    assert main(["parity", "--rtol", "1e-4", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "FAIL" not in out and "--rtol 0.0001 (not the defaults): rtol 0.0001 (default 1e-06)" in out
