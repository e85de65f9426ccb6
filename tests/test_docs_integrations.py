"""The Python examples of docs/integrations.md run as written and print what the page says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "integrations.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def run_block(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {})
    return out.getvalue()


def block(word: str) -> str:
    (code,) = [b for b in BLOCKS if word in b]
    return code


def test_the_page_has_its_four_examples():
    assert len(BLOCKS) == 4


@pytest.mark.loggers
def test_mlflow_example(monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert run_block(block("MlflowClient")).split() == ["True", "2"]  # episodes 1, 2 evaluated


def test_pettingzoo_example():
    out = run_block(block("parallel_env(")).splitlines()
    assert out[0] == "(140,) (140,)"
    reward, offload = out[1].split()
    assert float(reward) < 0 and float(offload) in (0.0, 1.0, 2.0)


@pytest.mark.cross
def test_torchrl_example():
    pytest.importorskip("torchrl")
    code = block("task_env(")
    printed = run_block(code).strip()
    assert printed == re.search(r"# (torch.Size.*)", code).group(1)


@pytest.mark.cross
def test_benchmarl_example():
    pytest.importorskip("benchmarl")
    assert run_block(block("MappoConfig")).strip().splitlines()[-1] == "200"
