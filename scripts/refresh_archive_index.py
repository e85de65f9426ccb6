"""Bring archive.json files written before ``runs_provenance`` existed up to date, from the archives'
own tables (``ccm_madrl.archive.refresh_index``): the code each archive's runs ran, and a history
that lists each run once. Usage: ``PYTHONPATH=src python scripts/refresh_archive_index.py results/*/``."""

from __future__ import annotations

import sys

from ccm_madrl.archive import refresh_index

for path in sys.argv[1:]:
    index = refresh_index(path)
    prov = ", ".join(
        f"{p['runs']} at {p['commit'][:7]} ({p['version']}, dirty {p['dirty']})"
        for p in index["runs_provenance"]
    )
    print(f"{path}: {index['runs_archived']} runs: {prov}")
