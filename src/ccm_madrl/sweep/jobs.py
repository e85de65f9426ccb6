"""What a backend runs: a job is one run (:class:`RunJob`) or a pack of runs trained as one program
(:class:`PackJob`, ``sweep/packing.py``). Jobs are plain picklable objects, handed as they are to a
local worker process, a Ray task or a SLURM job (``control.run_one``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunJob:
    """One run: its id, its config (``ExperimentConfig.model_dump(mode="json")``, validated again
    where it runs) and its run directory (an absolute path, resolved on the driver)."""

    id: str
    config: dict[str, Any]
    run_dir: str

    @property
    def members(self) -> tuple[RunJob, ...]:
        return (self,)

    @property
    def run_dirs(self) -> tuple[str, ...]:
        return (self.run_dir,)


@dataclass(frozen=True)
class PackJob:
    """Compatible runs trained as one program (``experiment/pack.py``), each into its own run
    directory; its id is ``pack:<first member's id>+<other members>``."""

    id: str
    members: tuple[RunJob, ...]

    @property
    def run_dirs(self) -> tuple[str, ...]:
        return tuple(m.run_dir for m in self.members)


Job = RunJob | PackJob
