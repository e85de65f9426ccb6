"""Parts by import path: a part, a logger or a backend named 'module:attribute' in a config (here a
module written to a temporary directory and put on PYTHONPATH, as a user's own module would be)
resolves the same in the sweep's parent and in its spawned worker processes (``sweep.control.run_one``,
the code path of the local pool, Ray and SLURM alike); an unknown one is refused in one line
naming its field."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ccm_madrl.cli import main
from ccm_madrl.experiment.config import ConfigError, build_config
from ccm_madrl.sweep import run_sweep

MODULE = "user_parts_for_sweep"
PARTS = textwrap.dedent(
    '''
    """A user's own parts: an update schedule, a logger and a backend."""
    import os
    from pathlib import Path

    from ccm_madrl.experiment.hooks import Callback

    HERE = Path(__file__).parent


    def _note(what):
        with open(HERE / f"{what}.txt", "a") as f:
            f.write(f"{os.getpid()}\\n")


    def first_actor_only(n_agents, shared):
        """One actor step, of client 0's actor alone."""
        _note("schedule")
        return [0]


    class EpisodeLogger(Callback):
        def __init__(self, cfg):
            self.name = cfg.name

        def on_episode_end(self, trainer, row):
            _note("logger")
            return True


    class InOrder:
        """A backend: every job in this process, one after the other."""

        def __init__(self, plan, address):
            self.threads = plan.threads

        def describe(self, jobs):
            return f"backend InOrder: {jobs} job(s) in this process"

        def run(self, jobs, on_done, poll, stop):
            from ccm_madrl.sweep import run_one

            _note("backend")
            for job in jobs:
                on_done(job.id, run_one(job, self.threads, stop))
                poll()
    '''
)
TINY = {
    "env": {"n_agents": 3, "max_steps": 2},
    "agent": {
        "replay": {"batch_size": 4},
        "architecture": {"critic_hidden": [16, 8]},
        "variant": {"actor_update": f"{MODULE}:first_actor_only"},
    },
    "logging": {"custom": [f"{MODULE}:EpisodeLogger"]},
    "training": {"episodes": 3, "eval_episodes": 1, "tensorboard": False},
    "monitor": {"enabled": False},
}


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> Path:
    """The module in its own directory, on this process's path and on PYTHONPATH for every other."""
    where = tmp_path / "user"
    where.mkdir()
    (where / f"{MODULE}.py").write_text(PARTS)
    monkeypatch.syspath_prepend(str(where))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(where), os.environ.get("PYTHONPATH", "")]))
    yield where
    sys.modules.pop(MODULE, None)


def sweep_file(tmp_path: Path, base: dict, seeds=(0, 1)) -> Path:
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"name": "bypath", "base": base, "seeds": list(seeds)}))
    return f


def pids(where: Path, what: str) -> set[int]:
    path = where / f"{what}.txt"
    return {int(x) for x in path.read_text().split()} if path.exists() else set()


def test_a_part_and_a_logger_by_import_path_train_in_spawned_workers(tmp_path, user_module):
    res = run_sweep(sweep_file(tmp_path, TINY), tmp_path / "out", workers=2, progress=False)
    assert (res.total, res.done, res.failed) == (2, 2, 0)
    workers = pids(user_module, "schedule")
    assert workers and os.getpid() not in workers  # the part ran in the spawned workers, not here
    assert pids(user_module, "logger") == workers  # the logger too, in the same processes
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for e in man["runs"]:
        assert e["pid"] in workers and e["episodes_done"] == 3
        stored = yaml.safe_load((tmp_path / "out" / e["run_dir"] / "config.yaml").read_text())
        assert stored["agent"]["variant"]["actor_update"] == f"{MODULE}:first_actor_only"


@pytest.mark.slurm
def test_a_part_by_import_path_trains_in_a_slurm_array_task(tmp_path, user_module):
    """The SLURM backend's array task (submitit's local executor: a process of its own) resolves the
    part as a local worker does (``run_one``, the one code path of every backend)."""
    pytest.importorskip("submitit")
    from ccm_madrl.sweep import BackendOptions, SlurmOptions

    local = BackendOptions(slurm=SlurmOptions(cluster="local"))
    res = run_sweep(sweep_file(tmp_path, TINY, seeds=[0]), tmp_path / "out", backend="slurm",
                    backend_options=local, progress=False)  # fmt: skip
    assert (res.total, res.done, res.failed) == (1, 1, 0)
    tasks = pids(user_module, "schedule")
    assert len(tasks) == 1 and os.getpid() not in tasks


def test_the_part_is_the_same_object_in_the_parent(user_module):
    from ccm_madrl.agents import make_learner
    from ccm_madrl.agents.parts import UPDATE_SCHEDULES
    from ccm_madrl.mec import RunRNG

    cfg = build_config(TINY)
    learner = make_learner(cfg, RunRNG("reference", 0, 37))
    assert learner.schedule is UPDATE_SCHEDULES[f"{MODULE}:first_actor_only"]
    assert learner.schedule is sys.modules[MODULE].first_actor_only
    assert f"{MODULE}:first_actor_only" not in list(UPDATE_SCHEDULES)  # the built-in names stay the keys


def test_a_backend_by_import_path(tmp_path, user_module):
    res = run_sweep(sweep_file(tmp_path, TINY, seeds=[0]), tmp_path / "out", backend=f"{MODULE}:InOrder",
                    progress=False)  # fmt: skip
    assert (res.total, res.done) == (1, 1)
    assert pids(user_module, "backend") == pids(user_module, "schedule") == {os.getpid()}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"agent": {**TINY["agent"], "variant": {"actor_update": "no_such_parts_module:f"}}},
         "agent.variant.actor_update"),
        ({"agent": {**TINY["agent"], "optimizer": f"{MODULE}:no_such_attribute"}}, "agent.optimizer"),
        ({"logging": {"custom": ["no_such_logger_module:Logger"]}}, "logging.custom"),
    ],
)  # fmt: skip
def test_an_unknown_import_path_fails_in_one_line_naming_its_field(tmp_path, user_module, change, field):
    with pytest.raises(ConfigError) as err:
        run_sweep(sweep_file(tmp_path, {**TINY, **change}), tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and field in msg and "cannot import" in msg, msg
    assert not (tmp_path / "out").exists()  # refused before the sweep directory exists


def test_an_unknown_backend_by_import_path_fails_in_one_line(tmp_path, user_module):
    with pytest.raises(ConfigError) as err:
        run_sweep(
            sweep_file(tmp_path, TINY), tmp_path / "out", backend="no_such_backend_module:B", progress=False
        )
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("backend: cannot import backend 'no_such_backend_module:B'"), (
        msg
    )


def test_the_command_line_takes_a_backend_by_import_path(tmp_path, user_module, capsys):
    out = tmp_path / "out"
    argv = [
        "sweep",
        str(sweep_file(tmp_path, TINY, seeds=[0])),
        "--backend",
        f"{MODULE}:InOrder",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert pids(user_module, "backend") == {os.getpid()}  # the user's backend ran the job
    assert "backend InOrder: 1 job(s) in this process" in capsys.readouterr().out
    assert main(["sweep", str(sweep_file(tmp_path, TINY)), "--backend", "no_such_backend_module:B",
                 "--out", str(tmp_path / "out2")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot import backend 'no_such_backend_module:B'" in err, err
    with pytest.raises(SystemExit) as bad:  # neither a registered name nor an import path: argparse's line
        main(["sweep", str(sweep_file(tmp_path, TINY)), "--backend", "nowhere"])
    assert bad.value.code == 2 and "invalid choice: 'nowhere'" in capsys.readouterr().err


def test_a_stored_config_names_code_it_does_not_import():
    """A run directory's config (validated without RESOLVE) keeps its import path as written."""
    from ccm_madrl.config import stored_config

    cfg = stored_config({**TINY, "agent": {"variant": {"actor_update": "not_imported_here:f"}}})
    assert cfg.agent.variant.actor_update == "not_imported_here:f" and "not_imported_here" not in sys.modules
