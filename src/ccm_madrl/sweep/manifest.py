"""The sweep's record of its runs: ``manifest.json`` (one entry per run) and each run's state."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..rundir import SweepDir


class Manifest:
    """The sweep's manifest.json, one entry per run (states: ``rundir.MANIFEST_STATES``)."""

    def __init__(self, sweep_dir: Path):
        self.sweep = SweepDir(sweep_dir)
        self.entries: dict[str, dict] = {e["id"]: e for e in self.sweep.manifest().get("runs", [])}

    def update(self, rid: str, **kw) -> None:
        self.entries.setdefault(rid, {"id": rid}).update(kw)

    def save(self, name: str) -> None:
        self.sweep.write_manifest(name, list(self.entries.values()))


def run_states(sweep_dir: Path, ids: Iterable[str]) -> dict[str, str]:
    """Each run's state in a sweep directory: pending (no status.json yet: not started), running,
    interrupted, failed, done, or stale (its status says running but its process is gone or its
    heartbeat stopped; see ``rundir.effective_state``)."""
    sd = SweepDir(sweep_dir)
    return {rid: sd.run(rid).state() for rid in ids}
