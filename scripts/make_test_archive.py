"""Regenerate tests/data/archive_tiny: run the tiny sweep of tests/data/archive_tiny_sweep.yaml in a
temporary directory and archive it (baselines included).

    PYTHONPATH=src python scripts/make_test_archive.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ccm_madrl.archive import archive_sweep
from ccm_madrl.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "tests" / "data" / "archive_tiny_sweep.yaml"
OUT = ROOT / "tests" / "data" / "archive_tiny"

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        run_sweep(SWEEP, Path(d) / "tiny", workers=1, progress=False)
        shutil.rmtree(OUT, ignore_errors=True)
        res = archive_sweep(Path(d) / "tiny", OUT, command="python scripts/make_test_archive.py")
    print(f"{OUT}: {res['archived']} runs, {sum(res['bytes'].values())} bytes")
