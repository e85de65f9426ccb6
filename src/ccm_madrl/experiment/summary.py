"""What one run returns (:class:`RunSummary`) and the error of a run directory that holds another
experiment: shared by the trainer (``runner.py``) and the cross runs (``cross.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class RunDirConflict(ValueError):
    """The run directory holds a different experiment."""


@dataclass
class RunSummary:
    run_dir: Path
    state: str
    episodes_done: int
    final_return: float
    wall_time_s: float
