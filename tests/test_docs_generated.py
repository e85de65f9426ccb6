"""The generated documents match the archived data they are generated from.

Each generator is run on the repository's files and its output compared with the committed page, so
a page cannot quote a number (or a verdict) that its generator would not print from `results/`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _all_local_counts(table1: str) -> dict[str, tuple[int, int]]:
    """From docs/table1.md 5.3: runs at the all-local return per version, (k, n)."""
    import re

    sentence = table1[table1.index("Runs that end exactly at the all-local"):]
    ind = re.search(r"independent actors: (\d+) of (\d+)", sentence)
    pub = re.search(r"shared actor: (\d+) of (\d+)", sentence)
    assert ind and pub, "docs/table1.md 5.3 lost its all-local counts"
    return {"independent": (int(ind[1]), int(ind[2])), "published": (int(pub[1]), int(pub[2]))}


def test_findings_quote_the_all_local_counts_of_table1():
    """docs/findings.md repeats 5.3's counts of runs ending at the all-local return in two places;
    both must be the generated page's numbers."""
    c = _all_local_counts((ROOT / "docs" / "table1.md").read_text())
    findings = " ".join((ROOT / "docs" / "findings.md").read_text().split())
    (pk, pn), (ik, i_n) = c["published"], c["independent"]
    assert f"all-local return in {pk} of its {pn} runs so far, against {ik} of {i_n} with independent" in findings
    assert f"stop there ({pk} of the {pn} archived 2000-episode runs of `table1_s10_published`" in findings
    assert f"do not reach it ({ik} of {i_n} archived runs)" in findings


def test_all_local_counts_are_read_from_the_sentence_of_5_3():
    page = ("x Runs that end exactly at the all-local heuristic's return ...: independent actors: 2 of 50 (...); "
            "shared actor: 19 of 60 (...)")
    assert _all_local_counts(page) == {"independent": (2, 50), "published": (19, 60)}


@pytest.mark.slow
def test_table1_page_is_what_its_generator_prints(tmp_path):
    """Regenerates docs/table1.md from results/ (about 6 minutes) and compares the text."""
    out = tmp_path / "table1.md"
    args = ["results/table1_s10", "results/table1_s10_published", "--out", str(out), "--prefix",
            "results/table1_s10_prefix_h100", "results/table1_s10_published_prefix_h100"]
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "table1_doc.py"), *args],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    got = out.read_text().replace(f"--out {out}", "--out docs/table1.md")
    assert got == (ROOT / "docs" / "table1.md").read_text()
