"""Which runs of a sweep train together: compatible runs (``experiment.pack.pack_key``) of one start
episode grouped into :class:`~ccm_madrl.sweep.jobs.PackJob` s of at most R runs."""

from __future__ import annotations

from ..experiment.config import build_config
from ..experiment.pack import default_pack_size, pack_key, packable
from ..rundir import RunDir
from .jobs import Job, PackJob, RunJob


def pack_jobs(jobs: list[RunJob], size: int | None, workers: int = 1) -> list[Job]:
    """Group a sweep's run jobs into packs of at most ``size`` compatible runs (``size`` 0 or None:
    ``experiment.pack.default_pack_size``); runs that cannot be packed, and a group of one, stay
    run jobs. Runs resuming from different episodes would train one after another in their pack
    (``PackTrainer.run``), so a pack takes runs of one start episode (the episode their
    status.json records), the furthest first."""
    groups: dict[tuple[str, int], list] = {}
    out: list[Job] = []
    for job in jobs:
        cfg = build_config(job.config)
        if packable(cfg):
            out.append(job)
        else:
            start = int(RunDir(job.run_dir).status().get("episodes_done") or 0)
            groups.setdefault((pack_key(cfg), start), []).append((job, cfg))
    for _, group in sorted(groups.items(), key=lambda kv: -kv[0][1]):
        r = size or default_pack_size(group[0][1], workers)
        for i in range(0, len(group), r):
            chunk = tuple(job for job, _ in group[i : i + r])
            out.append(
                chunk[0] if len(chunk) == 1 else PackJob(f"pack:{chunk[0].id}+{len(chunk) - 1}", chunk)
            )
    return out
