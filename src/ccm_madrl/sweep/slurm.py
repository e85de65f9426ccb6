"""The SLURM backend: one submitit array job per sweep submission, one array task per job."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..experiment.config import ConfigError
from ..experiment.stop import StopToken
from ..rundir import write_json
from .control import collect_after_stop, drain, run_one, usable_cores
from .jobs import Job
from .options import BackendOptions


@dataclass
class SlurmArray:
    """One SLURM array job per sweep submission (submitit), one array task per job. Re-running the
    sweep re-submits what is not done: finished runs are skipped, interrupted ones resume from their
    checkpoints. ``slurm.cluster: local`` runs the array as local processes (submitit's
    LocalExecutor): the same code path without a cluster."""

    folder: Path
    threads: int = 1
    workers: int | None = None
    options: BackendOptions = field(default_factory=BackendOptions)

    def executor(self):
        try:
            import submitit
        except ImportError as err:
            raise ConfigError("backend 'slurm' needs submitit: pip install 'ccm_madrl[slurm]'") from err
        s, o = self.options.slurm, self.options
        ex = submitit.AutoExecutor(folder=self.folder, cluster=s.cluster)
        params = {
            "timeout_min": s.time_min,
            "cpus_per_task": int(o.cpus_per_run or 1),
            "tasks_per_node": 1,
            "nodes": 1,
            "slurm_array_parallelism": s.array_parallelism or self.workers or 256,
        }
        if o.gpus_per_run:
            params["gpus_per_node"] = int(o.gpus_per_run)
        if ex.cluster == "slurm":
            extra = {"partition": s.partition, "account": s.account, "qos": s.qos, "constraint": s.constraint}
            params.update({f"slurm_{k}": v for k, v in extra.items() if v is not None})
            if s.mem_gb is not None:
                params["mem_gb"] = s.mem_gb
            if s.additional:
                params["slurm_additional_parameters"] = dict(s.additional)
        ex.update_parameters(**params)
        return ex

    def at_once(self, cluster: str, jobs: int) -> int:
        """Array tasks running at once: SLURM's array parallelism on a cluster; submitit's local
        executor starts every job it is given, so there the backend submits at most this many."""
        if cluster == "slurm":
            return min(jobs, self.options.slurm.array_parallelism or self.workers or 256)
        return max(1, min(jobs, self.workers or usable_cores()))

    def describe(self, jobs: int) -> str:
        cluster = self.options.slurm.cluster or "slurm"
        if cluster == "slurm":
            return (f"backend slurm: cluster slurm (sbatch), one array of {jobs} task(s), at most "
                    f"{self.at_once(cluster, jobs)} at once, {int(self.options.cpus_per_run or 1)} CPU(s) per task")  # fmt: skip
        return (f"backend slurm: cluster {cluster} (submitit's local executor: processes on this machine), "
                f"at most {self.at_once(cluster, jobs)} at once")  # fmt: skip

    def run(self, jobs: list[Job], on_done: Callable, poll: Callable, stop: StopToken) -> None:
        ex = self.executor()
        # SLURM sends SIGUSR2 before the time limit (submitit asks for it): the run checkpoints
        token = StopToken(signals=(signal.SIGINT, signal.SIGTERM, signal.SIGUSR2))
        waiting, subs, job_ids = list(jobs), {}, {}
        self.folder.mkdir(parents=True, exist_ok=True)

        def submit(k: int) -> None:
            batch, waiting[:] = waiting[:k], waiting[k:]
            if not batch or stop.requested:
                return
            with ex.batch():
                handles = [ex.submit(run_one, job, self.threads, token) for job in batch]
            for h, job in zip(handles, batch):
                subs[h], job_ids[job.id] = job.id, h.job_id
            write_json(self.folder / "jobs.json", job_ids)

        def finished(jid: str, res: dict) -> None:
            on_done(jid, res)
            submit(1)  # the local executor: the next job as one ends (a cluster had them all)

        submit(self.at_once(ex.cluster, len(jobs)))

        def wait_some(pending):
            done = [h for h in pending if h.done()]
            if not done:
                time.sleep(1.0)
            return done

        try:
            drain(subs, wait_some, lambda h: h.result(), finished, poll, stop, "slurm job")
        except KeyboardInterrupt:  # scancel: SLURM sends SIGTERM, each run checkpoints and stops
            for h in list(subs):
                h.cancel(check=False)
            collect_after_stop(subs, wait_some, lambda h: h.result(), on_done, 120.0)
            raise
