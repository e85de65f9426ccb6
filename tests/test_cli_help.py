"""The command line's options come from the registries and the options models: choices, defaults
and help texts; every option has a help text; benchmarks that would measure nothing are refused."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ccm_madrl import cli
from ccm_madrl.bench import OPTIONS


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _action(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == dest)


def test_every_option_of_every_command_has_a_help_text():
    parser = cli.build_parser()
    missing = [
        f"{name} {a.dest}"
        for name, p in _subparsers(parser).items()
        for a in p._actions
        if not (a.help and a.help.strip())
    ]
    assert not missing


def test_choices_come_from_the_registries():
    from ccm_madrl import sweep
    from ccm_madrl.agents.parts import UPDATE_SCHEDULES

    subs = _subparsers(cli.build_parser())
    assert list(_action(subs["sweep"], "backend").choices) == list(sweep.BACKENDS)
    assert list(_action(subs["bench"], "update").choices) == list(UPDATE_SCHEDULES)
    assert list(_action(subs["bench"], "which").choices) == [w for w in OPTIONS if w != "pack"]


def test_a_backend_added_to_the_registry_is_a_choice(monkeypatch):
    from ccm_madrl import sweep

    monkeypatch.setitem(sweep.BACKENDS, "inprocess", lambda plan, address: None)
    args = cli.build_parser().parse_args(["sweep", "f.yaml", "--backend", "inprocess"])
    assert args.backend == "inprocess"


def test_bench_defaults_are_the_options_models_defaults():
    """No default of its own on the command line: each benchmark's model supplies it, and the help
    says it (``--episodes``: 30 for agent, 8 for agent --pack, ...)."""
    bench = _subparsers(cli.build_parser())["bench"]
    text = " ".join(bench.format_help().split())
    for which, label in (
        ("agent", "agent"),
        ("pack", "agent --pack"),
        ("monitor", "monitor"),
        ("argmax", "argmax"),
    ):
        assert f"{label} {OPTIONS[which]().episodes}, at least" in text, which
    args = bench.parse_args(["agent"])
    assert cli.bench_options(args) == ("agent", {})  # nothing given: the model's defaults apply
    args = bench.parse_args(["agent", "--pack", "1", "4", "--episodes", "6"])
    assert cli.bench_options(args) == ("pack", {"packs": (1, 4), "episodes": 6, "monitors": (False,)})


@pytest.mark.parametrize(
    "argv, match",
    [
        (["agent", "--episodes", "2"], "--episodes: .*greater than or equal to 4"),
        (["agent", "--pack", "2", "--episodes", "4"], "--episodes: .*greater than or equal to 5"),
        (["monitor", "--episodes", "6"], "--episodes: .*greater than or equal to 7"),
        (["argmax", "--episodes", "4"], "--episodes: .*greater than or equal to 5"),
        (["agent", "--pack", "0"], "--pack: .*greater than 0"),
        (["env", "--episodes", "5"], "--episodes: not an option of bench env"),
        (["argmax", "--device", "cpu"], "--device: not an option of bench argmax"),
        (["agent", "--pack", "1", "--steps", "10", "100"], "--steps: .*one value"),
    ],
)
def test_a_benchmark_that_would_measure_nothing_is_refused_naming_the_minimum(argv, match):
    args = _subparsers(cli.build_parser())["bench"].parse_args(argv)
    with pytest.raises(cli.UsageError, match=match):
        cli.bench_options(args)


def test_help_texts_name_what_a_newcomer_looks_for():
    parser = cli.build_parser()
    subs = _subparsers(parser)
    top = " ".join(parser.format_help().split())
    assert "SLURM" in top and "archive directories" in top  # the summary: sweep backends, report input
    assert "resumed" in subs["train"].format_help()
    assert _action(subs["sweep"], "no_progress").help


def test_sweep_without_a_file_names_only_the_file(capsys):
    with pytest.raises(SystemExit) as err:
        cli.build_parser().parse_args(["sweep"])
    assert err.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith("the following arguments are required: FILE")


def test_parsing_a_command_line_loads_no_training_code():
    """The registries are read when an option that needs them is used (or its help printed)."""
    code = (
        "import sys; from ccm_madrl import cli; p = cli.build_parser(); "
        "p.parse_args(['report', 'x']); p.parse_args(['bench', 'agent', '--episodes', '5']); "
        "p.parse_args(['sweep', 'f.yaml']); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
