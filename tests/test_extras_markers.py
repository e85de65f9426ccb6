"""The tests that need an optional extra carry its marker (CI's second step selects them by it), and
the extras' packages match pyproject.toml. The hook itself is in conftest.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import EXTRA_OF, unmarked_extra

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_a_skip_for_an_extras_package_needs_the_extras_marker():
    msg = "could not import 'mlflow': No module named 'mlflow'"
    assert "@pytest.mark.loggers" in unmarked_extra(msg, {"slow"})
    assert unmarked_extra(msg, {"loggers"}) is None
    assert "the cross extra" in unmarked_extra("could not import 'stable_baselines3.common'", set())
    # other skips (no GPU, a package outside the extras) are not the hook's business
    assert unmarked_extra("could not import 'lifelines_not_a_package'", set()) is None
    assert unmarked_extra("CUDA is not available", set()) is None


def test_each_marked_extra_is_an_extra_of_the_package_with_its_packages():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    markers = {m.split(":")[0] for m in meta["tool"]["pytest"]["ini_options"]["markers"]}
    for pkg, extra in EXTRA_OF.items():
        assert extra in extras and extra in markers, (pkg, extra)
    for extra in set(EXTRA_OF.values()):
        declared = " ".join(extras[extra]).replace("-", "_").lower()
        own = [p for p, e in EXTRA_OF.items() if e == extra and p in declared]
        assert own, f"none of the packages mapped to {extra} is in its requirements"


def test_ci_runs_the_readme_quick_start_literally_before_anything_else():
    readme = (ROOT / "README.md").read_text()
    setup, tests = re.findall(r"```bash\n(.+?)\n```", readme.split("## Quick start")[1], re.S)[:2]
    ci = [
        ln
        for ln in (ROOT / ".ci" / "run").read_text().splitlines()
        if ln and not ln.startswith(("#", "step", "set ", "cd ", "t0="))
    ]
    assert ci[:2] == [setup.strip(), tests.strip()]
    assert '-e ".[dev]"' in setup and "torch==2.13.0" in setup
