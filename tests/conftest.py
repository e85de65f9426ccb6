from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def env_golden() -> Path:
    return DATA / "env_a.npz"


@pytest.fixture(scope="session")
def agent_golden() -> Path:
    return DATA / "agent_a.npz"


@pytest.fixture
def one_torch_thread():
    """One torch thread, as a run trains by default (config `threads: 1`). Exactness tests need it: with
    more threads BLAS splits sums by matrix shape (a pack against its runs alone, row-invariant
    scoring); tiny networks also contend badly for threads on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# The optional extras (pyproject.toml) by the top-level package a test imports, and the marker that
# CI's second step selects them by. A test that skips because one of these packages is missing must
# carry the marker, or it would run in neither of CI's steps.
EXTRA_OF = {
    "ray": "ray",
    "submitit": "slurm",
    "mlflow": "loggers",
    "wandb": "loggers",
    "stable_baselines3": "cross",
    "benchmarl": "cross",
    "torchrl": "cross",
    "vmas": "cross",
    "mujoco": "cross",
    "gymnasium_robotics": "cross",
}


def unmarked_extra(skip_message: str, markers: set[str]) -> str | None:
    """The problem, if a test skipped with ``skip_message`` needs an extra whose marker it lacks."""
    m = re.match(r"could not import '([\w.]+)'", skip_message)
    extra = EXTRA_OF.get(m.group(1).split(".")[0]) if m else None
    if extra is None or extra in markers:
        return None
    return (
        f"skipped for want of {m.group(1)!r} (the {extra} extra) without @pytest.mark.{extra}: "
        "CI's extras step would not run it"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and call.excinfo is not None and call.excinfo.errisinstance(pytest.skip.Exception):
        problem = unmarked_extra(str(call.excinfo.value), {mk.name for mk in item.iter_markers()})
        if problem:
            rep.outcome, rep.longrepr = "failed", f"{item.nodeid}: {problem}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and isinstance(collector, pytest.Module):  # a module-level importorskip
        msg = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        msg = msg.removeprefix("Skipped: ")
        marks = set(re.findall(r"pytest\.mark\.(\w+)", Path(collector.path).read_text()))
        problem = unmarked_extra(msg, marks)
        if problem:
            rep.outcome, rep.longrepr = "failed", f"{collector.nodeid}: {problem}"
