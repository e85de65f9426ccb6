"""The generated documents match the archived data they are generated from.

Each generator is run on the repository's files and its output compared with the committed page, so
a page cannot quote a number (or a verdict) that its generator would not print from `results/`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def test_comparison_page_blocks_match_the_archives():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "comparison_doc.py"), "--check"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_comparison_check_fails_on_a_stale_block(tmp_path):
    doc = (ROOT / "benchmarks" / "comparison.md").read_text()
    stale = tmp_path / "comparison.md"
    stale.write_text(doc.replace("| 3 | -180.4", "| 3 | -180.5", 1) if "| 3 | -180.4" in doc
                     else doc.replace("<!-- /comparison -->", "| stale |\n<!-- /comparison -->", 1))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "comparison_doc.py"), "--check", "--doc", str(stale)],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 1 and "stale" in r.stderr


def test_preset_factors_page_is_what_its_generator_prints(tmp_path):
    out = tmp_path / "preset_factors.md"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "preset_factors_doc.py"), "results/preset_factors",
                        "--corners", "results/table1_s10", "results/table1_s10_published", "--out", str(out)],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    got = out.read_text().replace(f"--out {out}", "--out docs/preset_factors.md")
    assert got == (ROOT / "docs" / "preset_factors.md").read_text()
