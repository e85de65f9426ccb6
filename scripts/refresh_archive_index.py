"""Bring archive.json files written before ``runs_provenance`` existed up to date, from the archives'
own tables (``ccm_madrl.archive.refresh_index``): the code and devices each archive's runs ran on,
a history that lists each run once, and no path of the machine that wrote it. Usage: ``PYTHONPATH=src python scripts/refresh_archive_index.py results/*/``."""

from __future__ import annotations

import sys

from ccm_madrl.archive import is_archive, refresh_index

for path in sys.argv[1:]:
    if not is_archive(path):
        print(f"{path}: not an archive, left alone")
        continue
    index = refresh_index(path)
    prov = ", ".join(
        f"{p['runs']} at {p['commit'][:7]} ({p['version']}, dirty {p['dirty']}, {p['device_name']})"
        for p in index["runs_provenance"]
    )
    print(f"{path}: {index['runs_archived']} runs: {prov}")
