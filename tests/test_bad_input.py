"""Bad input through the real command line: every case runs the ``ccm-madrl`` command in its own
process and must exit 2 with one line naming the field or path, no traceback, and leave no run
directory behind where none should be. ``docs/reliability.md`` lists the cases; its table is
generated from :data:`CASES` (``python tests/test_bad_input.py`` rewrites it) and tested against it.

Each case is a child process running ``ccm_madrl.cli`` as ``python -m`` does (``runpy``, real
``sys.exit``, real stdout/stderr, an uncaught exception printed as the interpreter prints it);
the children are forked from one interpreter that imported the package once, so that ~50 cases take
seconds rather than ~50 fresh torch imports. A few cases also run in a fresh
``python -m ccm_madrl.cli``, to show the two agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
DOC = ROOT / "docs" / "reliability.md"
MARKER = "evil-marker"

SMALL = {
    "env": {"n_agents": 6, "max_steps": 3},
    "agent": {"batch_size": 8, "critic_hidden": [32, 16], "actor_update": "simultaneous"},
    "training": {"episodes": 3, "eval_episodes": 2, "tensorboard": False},
    "monitor": {"enabled": False},
}


@dataclass
class Case:
    name: str  # what is wrong
    args: list[str]  # the command line after ``ccm-madrl``; {d} is the test's directory
    names: str  # the one error line contains this (the field or the path)
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards (besides
    # runs/, sweeps/ and reports/ in the case's own working directory)
    fixed: bool = False  # failed before: a traceback, another exit status, something left behind,
    # code run, or a message not naming the field or path


CASES = [
    # --------------------------------------------------------------- train: config values
    Case("infinite learning rate", ["train", "{d}/small.yaml", "--set", "agent.critic_lr=.inf", "--run-dir", "{d}/r_inf"],
         "agent.critic_lr", ["{d}/r_inf"], fixed=True),
    Case("NaN learning rate", ["train", "{d}/small.yaml", "--set", "agent.actor_lr=.nan", "--run-dir", "{d}/r_nan"],
         "agent.actor_lr", ["{d}/r_nan"]),
    Case("infinite coefficient", ["train", "--set", "agent.mitigations.actor_reg=preact", "--set", "agent.mitigations.actor_reg_coef=.inf"],
         "agent.mitigations.actor_reg_coef", fixed=True),
    Case("infinite environment constant", ["train", "--set", "env.lambda_e=.inf"], "env.lambda_e", fixed=True),
    Case("CUDA requested, none available", ["train", "{d}/small.yaml", "--set", "device=cuda", "--run-dir", "{d}/r_cuda"],
         "device", ["{d}/r_cuda"], fixed=True),
    Case("zero torch threads", ["train", "--set", "threads=0"], "threads"),
    Case("negative learning rate", ["train", "--set", "agent.actor_lr=-1"], "agent.actor_lr"),
    Case("learning rate not a number", ["train", "--set", "agent.actor_lr=zero"], "agent.actor_lr"),
    Case("unknown optimiser", ["train", "--set", "agent.optimizer=adagrad"], "agent.optimizer"),
    Case("unknown key", ["train", "--set", "agent.lr=0.1"], "agent.lr"),
    Case("zero episodes", ["train", "--set", "training.episodes=0"], "training.episodes"),
    Case("unknown RNG mode", ["train", "--set", "rng_mode=global"], "rng_mode"),
    Case("unknown environment mode", ["train", "--set", "env.mode=H3"], "env.mode"),
    Case("override without '='", ["train", "--set", "seed"], "'seed'"),
    Case("regulariser without coefficient", ["train", "--set", "agent.mitigations.actor_reg=preact"], "actor_reg_coef"),
    # --------------------------------------------------------------- train: paths
    Case("config file missing", ["train", "{d}/missing.yaml"], "missing.yaml"),
    Case("config is a directory", ["train", "{d}/adir"], "adir", fixed=True),
    Case("config not valid YAML", ["train", "{d}/broken.yaml"], "broken.yaml", fixed=True),
    Case("config not a mapping", ["train", "{d}/list.yaml"], "list.yaml"),
    Case("--run-dir is a file", ["train", "{d}/small.yaml", "--run-dir", "{d}/afile.txt"], "afile.txt", fixed=True),
    Case("--run-dir inside a file", ["train", "{d}/small.yaml", "--run-dir", "{d}/afile.txt/run"], "afile.txt", fixed=True),
    Case("--run-dir of another experiment", ["train", "{d}/small.yaml", "--run-dir", "{d}/other_run"], "other_run"),
    Case("checkpoint that would run code", ["train", "{d}/small.yaml", "--run-dir", "{d}/evil_run"], "checkpoint.pt",
         ["{d}/" + MARKER], fixed=True),
    Case("only checkpoint truncated", ["train", "{d}/small.yaml", "--run-dir", "{d}/trunc_run"], "checkpoint.pt", fixed=True),
    # --------------------------------------------------------------- sweep
    Case("sweep file missing", ["sweep", "{d}/nosweep.yaml"], "nosweep.yaml"),
    Case("sweep file is a directory", ["sweep", "{d}/adir"], "adir", fixed=True),
    Case("sweep axis with unknown key", ["sweep", "{d}/sweep_badkey.yaml", "--out", "{d}/s1"], "agent.lr", ["{d}/s1"]),
    Case("sweep axis with a negative value", ["sweep", "{d}/sweep_neg.yaml", "--out", "{d}/s2"], "agent.actor_lr", ["{d}/s2"]),
    Case("sweep axis with an infinite value", ["sweep", "{d}/sweep_inf.yaml", "--out", "{d}/s3"], "agent.critic_lr", ["{d}/s3"], fixed=True),
    Case("sweep seed as an axis", ["sweep", "{d}/sweep_seed.yaml", "--out", "{d}/s4"], "seeds", ["{d}/s4"]),
    Case("sweep base file missing", ["sweep", "{d}/sweep_nobase.yaml", "--out", "{d}/s5"], "nobase.yaml", ["{d}/s5"]),
    Case("sweep --out is a file", ["sweep", "{d}/sweep_ok.yaml", "--out", "{d}/afile.txt"], "afile.txt", fixed=True),
    Case("sweep --workers 0", ["sweep", "{d}/sweep_ok.yaml", "--workers", "0", "--out", "{d}/s6"], "--workers", ["{d}/s6"], fixed=True),
    Case("sweep --set unknown key", ["sweep", "{d}/sweep_ok.yaml", "--set", "agent.lr=1", "--out", "{d}/s7"], "agent.lr", ["{d}/s7"]),
    # --------------------------------------------------------------- report
    Case("report directory missing", ["report", "{d}/nosuchdir"], "nosuchdir"),
    Case("report of a file", ["report", "{d}/afile.txt"], "afile.txt", fixed=True),
    Case("report of a directory without runs", ["report", "{d}/adir"], "adir"),
    Case("report --out is a file", ["report", "{d}/other_run", "--out", "{d}/afile.txt"], "afile.txt", fixed=True),
    # --------------------------------------------------------------- parity
    Case("golden file missing", ["parity", "{d}/nope.npz"], "nope.npz"),
    Case("golden file is a directory", ["parity", "{d}/adir"], "adir", fixed=True),
    Case("golden file not an npz archive", ["parity", "{d}/afile.txt"], "not a NumPy .npz archive", fixed=True),
    Case("golden file a single .npy array", ["parity", "{d}/array.npy"], "single .npy array", fixed=True),
    Case("npz of unrelated arrays", ["parity", "{d}/unrelated.npz"], "unrelated.npz", fixed=True),
    Case("env golden file without a key", ["parity", "{d}/env_missing.npz"], "'TOBM_dones'", fixed=True),
    Case("agent golden file without a key", ["parity", "{d}/agent_missing.npz"], "'batch/states/4'", fixed=True),
    Case("parity --rtol not a number", ["parity", "--rtol", "tight", "{d}/env_a.npz"], "--rtol 'tight'"),
    Case("parity --rtol zero", ["parity", "--rtol", "0", "{d}/env_a.npz"], "--rtol: must be a finite number > 0"),
    Case("parity --atol negative", ["parity", "--atol=-1e-6", "{d}/env_a.npz"], "--atol: must be a finite number > 0"),
    # --------------------------------------------------------------- bench
    Case("bench --out is a file", ["bench", "env", "--out", "{d}/afile.txt"], "afile.txt", fixed=True),
    Case("bench on CUDA, none available", ["bench", "agent", "--pack", "1", "--device", "cuda", "--out", "{d}/b_cuda"],
         "device", ["{d}/b_cuda"]),
    # --------------------------------------------------------------- untrusted run data (#35)
    Case("run dir file a link (status.json.tmp)", ["train", "{d}/small.yaml", "--run-dir", "{d}/link_status"],
         "status.json.tmp: is a symbolic link", fixed=True),
    Case("run dir file a link (checkpoint.pt.tmp)", ["train", "{d}/small.yaml", "--run-dir", "{d}/link_ckpt"],
         "checkpoint.pt.tmp: is a symbolic link", fixed=True),
    Case("run dir a link inside a sweep", ["sweep", "{d}/sweep_ok.yaml", "--out", "{d}/link_sweep"],
         "0123abcd: is a symbolic link", fixed=True),
    Case("archive with a linked table", ["archive", "{d}/link_sweep", "--out", "{d}/link_archive", "--no-baselines"],
         "runs.parquet: is a symbolic link", fixed=True),
    Case("config with a Python tag", ["train", "{d}/tag.yaml"], "tag.yaml: tag !!python/object/apply:os.system not allowed",
         fixed=True),
    Case("stored config with a Python tag", ["report", "{d}/tag_run"], "config.yaml: tag !!python/object", fixed=True),
    Case("sweep file with a Python tag", ["sweep", "{d}/sweep_tag.yaml", "--out", "{d}/s8"], "sweep_tag.yaml: tag !!python",
         ["{d}/s8"], fixed=True),
    Case("config an alias bomb", ["train", "{d}/bomb.yaml"], "bomb.yaml: more than 100000 values", fixed=True),
    Case("sweep base an alias bomb", ["sweep", "{d}/sweep_bomb.yaml", "--out", "{d}/s9"], "sweep_bomb.yaml: more than",
         ["{d}/s9"], fixed=True),
    Case("run name a relative path", ["train", "{d}/small.yaml", "name=../../x"], "name: must be a label", fixed=True),
    Case("run name an absolute path", ["train", "{d}/small.yaml", "name={d}/abs_x"], "name: must be a label",
         fixed=True),
    Case("sweep name a path", ["sweep", "{d}/sweep_path.yaml"], "name: must be a label", fixed=True),
    # --------------------------------------------------------------- sweep plans (#35 item 7)
    Case("sweep --seeds 0", ["sweep", "{d}/sweep_axis.yaml", "--seeds", "0", "--out", "{d}/s10"], "seeds: Value error, a count must be >= 1",
         ["{d}/s10"], fixed=True),
    Case("sweep --seeds -1", ["sweep", "{d}/sweep_axis.yaml", "--seeds=-1", "--out", "{d}/s11"], "seeds: Value error, a count must be >= 1",
         ["{d}/s11"], fixed=True),
    Case("sweep --seeds with a negative seed", ["sweep", "{d}/sweep_axis.yaml", "--seeds", "[0, -1]", "--out", "{d}/s12"],
         "seeds: Value error, a seed must be >= 0", ["{d}/s12"], fixed=True),
    Case("sweep file seeds: 0", ["sweep", "{d}/sweep_seeds0.yaml", "--out", "{d}/s13"], "seeds: Value error, a count must be >= 1",
         ["{d}/s13"], fixed=True),
    Case("sweep --set of an axis key, bad value", ["sweep", "{d}/sweep_axis.yaml", "--set", "agent.actor_lr=banana", "--out", "{d}/s14"],
         "agent.actor_lr: Input should be a valid number", ["{d}/s14"], fixed=True),
    Case("sweep bare override of an axis key, bad value", ["sweep", "{d}/sweep_axis.yaml", "agent.actor_lr=-1", "--out", "{d}/s15"],
         "agent.actor_lr: Input should be greater than 0", ["{d}/s15"], fixed=True),
    Case("run too large for memory", ["train", "{d}/small.yaml", "--set", "env.n_agents=100000000", "--run-dir", "{d}/r_big"],
         "env.n_agents=100000000", ["{d}/r_big"], fixed=True),
    Case("sweep run too large for memory", ["sweep", "{d}/sweep_axis.yaml", "--set", "env.n_agents=100000000", "--out", "{d}/s17"],
         "env.n_agents=100000000", ["{d}/s17"], fixed=True),
    Case("sweep into a directory of another plan", ["sweep", "{d}/sweep_axis.yaml", "--out", "{d}/other_plan"],
         "holds another plan", ["{d}/other_plan/sweep.yaml", "{d}/other_plan/runs"], fixed=True),
    Case("sweep --set seed negative", ["sweep", "{d}/sweep_axis.yaml", "--set", "seed=-3", "--out", "{d}/s16"],
         "seeds: Value error, a seed must be >= 0", ["{d}/s16"], fixed=True),
]  # fmt: skip

OUTSIDE = "outside.txt"  # the file the links of the untrusted run directories point at
# a billion laughs: 0.3 KB of YAML whose aliases expand to 9**9 strings
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


class Evil:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def make_inputs(d: Path) -> None:
    (d / "adir").mkdir()
    (d / "afile.txt").write_text("not a config, not a directory, not an archive\n")
    (d / "small.yaml").write_text(yaml.safe_dump(SMALL))
    (d / "broken.yaml").write_text("env: {n_agents: [\n")
    (d / "list.yaml").write_text("- a\n- b\n")
    other = d / "other_run"
    other.mkdir()
    other_cfg = yaml.safe_load(yaml.safe_dump(SMALL))
    other_cfg["agent"]["actor_lr"] = 0.5
    (other / "config.yaml").write_text(yaml.safe_dump(other_cfg))
    (d / "evil_run").mkdir()
    torch.save({"config_id": "x", "payload": Evil(d / MARKER)}, d / "evil_run" / "checkpoint.pt")
    (d / "trunc_run").mkdir()
    torch.save({"config_id": "x", "w": torch.zeros(1000)}, d / "trunc_run" / "checkpoint.pt")
    raw = (d / "trunc_run" / "checkpoint.pt").read_bytes()
    (d / "trunc_run" / "checkpoint.pt").write_bytes(raw[: len(raw) // 2])
    base = {"name": "bad", "base": SMALL}
    for name, extra in {
        "sweep_badkey": {"axes": {"agent.lr": [0.1]}},
        "sweep_neg": {"axes": {"agent.actor_lr": [0.1, -1]}},
        "sweep_inf": {"axes": {"agent.critic_lr": [0.001, float("inf")]}},
        "sweep_seed": {"axes": {"seed": [1, 2]}},
        "sweep_nobase": {"base": "nobase.yaml"},
        "sweep_ok": {},
        "sweep_axis": {"axes": {"agent.actor_lr": [0.001, 0.01]}},
        "sweep_seeds0": {"seeds": 0},
    }.items():
        (d / f"{name}.yaml").write_text(yaml.safe_dump({**base, **extra}))
    (d / OUTSIDE).write_text("the user's file\n")
    for run, name in (("link_status", "status.json.tmp"), ("link_ckpt", "checkpoint.pt.tmp")):
        (d / run).mkdir()  # the run's own config (a resume), and a link where a writer used to write
        (d / run / "config.yaml").write_text(yaml.safe_dump(SMALL))
        (d / run / name).symlink_to(d / OUTSIDE)
    (d / "link_sweep" / "runs").mkdir(parents=True)
    (d / "link_sweep" / "runs" / "0123abcd").symlink_to(d / "adir", target_is_directory=True)
    (d / "link_archive").mkdir()
    (d / "link_archive" / "runs.parquet").symlink_to(d / OUTSIDE)
    (d / "tag.yaml").write_text("seed: !!python/object/apply:os.system ['touch " + str(d / MARKER) + "']\n")
    (d / "tag_run").mkdir()
    (d / "tag_run" / "config.yaml").write_text((d / "tag.yaml").read_text())
    (d / "sweep_tag.yaml").write_text(yaml.safe_dump(base) + (d / "tag.yaml").read_text())
    (d / "bomb.yaml").write_text(BOMB)
    (d / "sweep_bomb.yaml").write_text(
        "name: bomb\nbase:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines())
    )
    (d / "other_plan").mkdir()  # a sweep directory of another plan (its manifest only)
    (d / "other_plan" / "manifest.json").write_text(json.dumps({"sweep": "bad", "runs": [{"id": "0123456789ab"}]}))
    (d / "sweep_path.yaml").write_text(yaml.safe_dump({**base, "name": "../../x"}))
    np.save(d / "array.npy", np.zeros(3))
    (d / "env_a.npz").write_bytes((DATA / "env_a.npz").read_bytes())
    np.savez(d / "unrelated.npz", a=np.zeros(3))
    for src, dst, drop in (("env_a.npz", "env_missing.npz", "TOBM_dones"), ("agent_a.npz", "agent_missing.npz", "batch/states/4")):  # fmt: skip
        with np.load(DATA / src) as z:
            np.savez(d / dst, **{k: z[k] for k in z.files if k != drop})


ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m ccm_madrl.cli ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "ccm_madrl.cli", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def serve() -> None:
    """Run each command line of the JSON list on stdin (``[[cwd, args], ...]``) in a child process
    forked from this one, as ``python -m ccm_madrl.cli ARGS`` would; print ``[[exit status, output],
    ...]`` as JSON."""
    import runpy
    import traceback

    import ccm_madrl.bench  # noqa: F401 - import once, before forking
    import ccm_madrl.parity  # noqa: F401
    import ccm_madrl.report  # noqa: F401
    import ccm_madrl.sweep  # noqa: F401

    jobs = json.load(sys.stdin)
    results = []
    for cwd, args in jobs:
        with tempfile.TemporaryFile("w+") as out:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the child: the command line, then exit with its status
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
                os.chdir(cwd)
                sys.argv = ["ccm-madrl", *args]
                try:
                    runpy.run_module("ccm_madrl.cli", run_name="__main__", alter_sys=True)
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught one
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            out.seek(0)
            results.append([os.waitstatus_to_exitcode(status), out.read()])
    print(json.dumps(results))


def run_many(jobs: list[tuple[Path, list[str]]], timeout: float = 300) -> list[tuple[int, str]]:
    p = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
         "from test_bad_input import serve; serve()"],
        input=json.dumps([[str(cwd), args] for cwd, args in jobs]),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return [tuple(r) for r in json.loads(p.stdout.strip().splitlines()[-1])]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_input")
    make_inputs(d)
    for i in range(len(CASES)):
        (d / f"cwd{i}").mkdir()  # each case's own (empty) working directory
    done = run_many([(d / f"cwd{i}", [a.format(d=d) for a in c.args]) for i, c in enumerate(CASES)])
    return d, dict(zip((c.name for c in CASES), done))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_exits_2_with_one_line(results, case):
    d, procs = results
    rc, out = procs[case.name]
    out = out.strip()
    assert rc == 2, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    line = out.splitlines()[0]
    assert line.startswith(f"ccm-madrl {case.args[0]}: error: "), line
    assert case.names in line, line
    for path in case.absent:
        assert not Path(path.format(d=d)).exists(), f"{case.name}: left {path.format(d=d)} behind"
    cwd = d / f"cwd{CASES.index(case)}"
    assert not list(cwd.iterdir()), f"{case.name}: left {list(cwd.iterdir())} in its working directory"


def test_refused_checkpoint_ran_nothing(results):
    d, _ = results
    assert not (d / MARKER).exists()
    assert (d / "evil_run" / "checkpoint.pt.damaged").exists()  # set aside, not deleted


def test_refused_run_data_wrote_nothing_outside(results):
    """The links' target is unchanged, the names that were paths created nothing outside runs/ and
    sweeps/ (nor the directories themselves), and the Python tags ran nothing."""
    d, _ = results
    assert (d / OUTSIDE).read_text() == "the user's file\n" and not list((d / "adir").iterdir())
    assert not (d / MARKER).exists() and not list(d.glob("x-*")) and not list(d.glob("abs_x*"))
    assert not (d / "x").exists() and not (d.parent / "x").exists() and not list(d.parent.glob("x-*"))
    assert sorted(p.name for p in (d / "link_ckpt").iterdir()) == ["checkpoint.pt.tmp", "config.yaml"]


@pytest.mark.parametrize(
    "name",
    [
        "infinite learning rate",
        "config is a directory",
        "golden file not an npz archive",
        "run dir file a link (status.json.tmp)",
        "run dir file a link (checkpoint.pt.tmp)",
    ],
)
def test_a_fresh_interpreter_agrees(results, name, tmp_path):
    d, procs = results
    case = next(c for c in CASES if c.name == name)
    args = [a.format(d=d).replace(str(d / "r_"), str(tmp_path / "r_")) for a in case.args]
    p = run_cli(args, cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().replace(str(tmp_path), str(d)) == procs[name][1].strip()
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("r_*"))


def doc_table() -> str:
    rows = ["| # | bad input | command | the error line names | |", "|---|---|---|---|---|"]
    for i, c in enumerate(CASES, 1):
        cmd = " ".join(a.replace("{d}/", "") for a in c.args)
        rows.append(f"| {i} | {c.name} | `ccm-madrl {cmd}` | `{c.names}` | {'fixed' if c.fixed else ''} |")
    return "\n".join(rows)


START, END = "<!-- cases: generated from tests/test_bad_input.py -->", "<!-- end of cases -->"


def test_docs_list_every_case():
    text = DOC.read_text()
    assert START in text and END in text
    table = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == doc_table(), "docs/reliability.md is out of date: run python tests/test_bad_input.py"


if __name__ == "__main__":  # rewrite the table in docs/reliability.md
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    DOC.write_text(head + START + "\n" + doc_table() + "\n" + END + rest.split(END, 1)[1])


def test_an_unexpected_error_says_where_its_traceback_is(monkeypatch, capsys, tmp_path):
    from ccm_madrl import cli

    def broken(args):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(cli, "cmd_report", broken)
    monkeypatch.setattr(cli.tempfile, "tempdir", str(tmp_path))
    assert cli.main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected error (RuntimeError: a bug over two lines)" in err
    log = Path(err.rsplit("full traceback in ", 1)[1])
    assert log.parent == tmp_path and "Traceback" in log.read_text() and "a bug" in log.read_text()


# ------------------------------------------------------------------------------ untrusted run data
def test_an_alias_bomb_is_refused_in_seconds(tmp_path):
    """A fresh ``python -m ccm_madrl.cli`` on a billion-laughs config and on a sweep whose base is
    one: exit 2 and one line naming the file, well within the timeout (it used to never return)."""
    (tmp_path / "bomb.yaml").write_text(BOMB)
    (tmp_path / "sweep.yaml").write_text(
        "name: bomb\nbase:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines())
    )
    for args, name in ((["train", "bomb.yaml"], "bomb.yaml"), (["sweep", "sweep.yaml"], "sweep.yaml")):
        p = run_cli(args, cwd=tmp_path, timeout=60)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert f"{name}: more than 100000 values once its YAML aliases are expanded" in p.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml", "sweep.yaml"]


MARKER_MODULE = """
from pathlib import Path

Path({marker!r}).write_text("imported")


def Factory(cfg, rng, device="cpu"):
    raise RuntimeError("never called")
"""


def test_stored_configs_name_code_that_reading_them_never_imports(tmp_path, monkeypatch, capsys):
    """A sweep whose runs' config.yaml name a learner 'module:factory' (a module on sys.path that
    writes a marker file when imported): report, archive, report of the archive, the store and a
    resume check of a run directory read them and import nothing. The same name in a config given
    to start a run is imported (the marker appears), so the module would have shown an import."""
    from ccm_madrl import cli
    from ccm_madrl.experiment.config import build_config
    from ccm_madrl.store import load
    from ccm_madrl.sweep import run_sweep

    module = f"ccm_marker_{os.getpid()}"
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{module}.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"name": "stored", "base": SMALL, "axes": {"agent.actor_lr": [1e-4, 1e-3]}, "seeds": [0]}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    res = run_sweep(tmp_path / "sweep.yaml", out=tmp_path / "sweep", workers=1, progress=False)
    assert res.done == 2
    runs = sorted((tmp_path / "sweep" / "runs").iterdir())
    for rd in runs:
        cfg = yaml.safe_load((rd / "config.yaml").read_text())
        cfg["agent"]["algorithm"] = f"{module}:Factory"
        (rd / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(SMALL))

    assert cli.main(["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "rep")]) == 0
    assert (
        cli.main(["archive", str(tmp_path / "sweep"), "--out", str(tmp_path / "arch"), "--no-baselines"]) == 0
    )
    assert cli.main(["report", str(tmp_path / "arch"), "--out", str(tmp_path / "rep2")]) == 0
    assert set(load(tmp_path / "arch").runs["cfg.agent.algorithm"]) == {f"{module}:Factory"}
    assert set(load(tmp_path / "sweep").runs["cfg.agent.algorithm"]) == {f"{module}:Factory"}
    capsys.readouterr()
    assert cli.main(["train", str(tmp_path / "small.yaml"), "--run-dir", str(runs[0]), "--no-progress"]) == 2
    assert "holds a different experiment" in capsys.readouterr().err
    assert module not in sys.modules and not marker.exists()

    with pytest.raises(Exception, match="never called"):  # a run started from such a config imports it
        from ccm_madrl.experiment import Trainer

        Trainer(build_config(SMALL, [f"agent.algorithm={module}:Factory"]), tmp_path / "started").run()
    assert module in sys.modules and marker.read_text() == "imported"
