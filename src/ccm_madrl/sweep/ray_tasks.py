"""The Ray backend: one Ray task per job, on a local Ray instance or a cluster."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..experiment.config import ConfigError
from ..experiment.stop import StopToken
from ..rundir import SWEEP_FILE
from .control import collect_after_stop, drain, run_one
from .jobs import Job
from .options import BackendOptions


def ray_run(job: Job, threads: int) -> dict:
    """One job in a Ray task: checks the run directory is the driver's (shared storage), runs it and
    says where it ran (node id, host, GPUs Ray assigned)."""
    import ray

    ctx = ray.get_runtime_context()
    where = {"node": ctx.get_node_id(), "gpus": [str(g) for g in ray.get_gpu_ids()]}
    sweep_file = Path(job.run_dirs[0]).parent.parent / SWEEP_FILE
    if not sweep_file.exists():
        return {
            "status": "failed",
            "error": f"{sweep_file} is not visible on node {socket.gethostname()}: the ray backend needs the "
            "sweep directory on a filesystem shared by every node at the same path (docs/scaling.md)",
            **where,
        }
    import ccm_madrl

    return {**run_one(job, threads), **where, "package": str(Path(ccm_madrl.__file__).parent)}


@dataclass
class RayTasks:
    """One Ray task per job, on a local Ray instance or the cluster at ``address``. Each task asks
    for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (Ray sets ``CUDA_VISIBLE_DEVICES`` to the
    GPUs it assigned, so ``device: auto`` runs on them, and on the CPU when none is asked for); at
    most ``workers`` tasks are in flight when given; a task lost with its node is run again
    (``max_retries``) and resumes from its checkpoint. Runs write to their (absolute) run
    directories, so every node must see the sweep directory at the same path."""

    address: str | None
    threads: int = 1
    workers: int | None = None
    options: BackendOptions = field(default_factory=BackendOptions)

    def describe(self, jobs: int) -> str:
        where = (
            f"the cluster at {self.address}"
            if self.address not in (None, "local")
            else "a local Ray instance"
        )
        at_once = (
            f"at most {min(self.workers, jobs)} task(s) in flight"
            if self.workers
            else "every task submitted at once"
        )
        o = self.task_options()
        return f"backend ray: {where}, {at_once}, {o['num_cpus']} CPU(s) and {o['num_gpus']} GPU(s) per task"

    def task_options(self) -> dict:
        """The resource requests and retries of each run's task (``ray.remote`` options)."""
        o = self.options
        return {
            "num_cpus": o.cpus_per_run if o.cpus_per_run is not None else 1,
            "num_gpus": o.gpus_per_run or 0,
            "max_retries": o.max_retries,
            "retry_exceptions": False,
        }

    def runtime_env(self) -> dict | None:
        """The job's ``runtime_env`` (given to ``ray.init``; Ray uploads a directory only at the job
        level): with ``ship_package`` every node imports this package's code, uploaded once per
        content hash. An already initialised Ray session keeps its own runtime_env."""
        o = self.options
        ship = o.ship_package if o.ship_package is not None else self.address not in (None, "local")
        if not ship:
            return None
        import ccm_madrl

        return {"py_modules": [str(Path(ccm_madrl.__file__).parent)]}

    def run(self, jobs: list[Job], on_done: Callable, poll: Callable, stop: StopToken) -> None:
        try:
            import ray
        except ImportError as err:
            raise ConfigError("backend 'ray' needs Ray: pip install 'ccm_madrl[ray]'") from err
        started = False
        if not ray.is_initialized():
            env = self.runtime_env()
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, runtime_env=env)
            started = True
            stop.reinstall()  # ray.init installs its own SIGTERM handler (it exits the driver at once)
        try:
            self._run(ray, jobs, on_done, poll, stop)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, jobs: list[Job], on_done: Callable, poll: Callable, stop: StopToken) -> None:
        remote = ray.remote(**self.task_options())(ray_run)
        queue_ = list(jobs)
        refs: dict = {}
        limit = self.workers or len(jobs)

        def submit() -> None:
            while queue_ and len(refs) < limit and not stop.requested:
                job = queue_.pop(0)
                refs[remote.remote(job, self.threads)] = job.id

        def wait_some(pending):
            return ray.wait(pending, num_returns=1, timeout=1.0)[0]

        def finished(jid: str, res: dict) -> None:
            on_done(jid, res)
            submit()

        submit()
        try:
            drain(refs, wait_some, ray.get, finished, poll, stop, "ray task")
        except KeyboardInterrupt:
            # ray.cancel interrupts a running task as a SIGINT would: it flags the run's stop token,
            # the run checkpoints after its episode and ends 'interrupted'; a queued task never starts.
            for ref in refs:
                ray.cancel(ref)
            collect_after_stop(refs, wait_some, ray.get, on_done, 600.0)
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
