"""The backends: where a sweep's jobs run. Each is a small class with ``run`` and ``describe``
(the protocol :class:`Backend`), made by a factory ``(plan, address) -> Backend`` of
:data:`BACKENDS`; a backend defined elsewhere is named by its import path, ``module:attribute``
(a factory or a class taking ``(plan, address)``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..config.imports import Registry, is_import_path
from ..experiment.config import ConfigError
from ..experiment.stop import StopToken
from .jobs import Job
from .local import LocalPool
from .options import BackendOptions
from .ray_tasks import RayTasks
from .slurm import SlurmArray

if TYPE_CHECKING:
    from .plan import SweepPlan


class Backend(Protocol):
    """Runs ``control.run_one(job, threads, token)`` for every job somewhere; ``token`` is each
    job's stop token, a child of the sweep's ``stop`` (:meth:`StopToken.share` / ``child``) or one
    the backend reaches by a signal (``ray.cancel``, ``scancel``). Calls ``on_done(job id, result)``
    as each finishes and ``poll()`` about once a second. Once ``stop`` is requested (a signal to the
    sweep), it stops every run (each checkpoints and comes back ``interrupted``; queued runs do not
    start), collects what comes back and raises KeyboardInterrupt. A backend only hands a job to
    ``run_one``, whether it stands for one run or a pack."""

    def run(
        self, jobs: list[Job], on_done: Callable[[str, dict], None], poll: Callable[[], None], stop: StopToken
    ) -> None: ...

    def describe(self, jobs: int) -> str:
        """One line: the backend, where it runs (cluster) and how many jobs at once."""
        ...


# backend name -> factory(plan, address) -> Backend
BACKENDS: dict[str, Callable[[SweepPlan, str | None], Backend]] = Registry(
    {
        "local": lambda plan, address: LocalPool(plan.workers, plan.threads),
        "ray": lambda plan, address: RayTasks(address, plan.threads, plan.workers_given, plan.options),
        "slurm": lambda plan, address: SlurmArray(
            plan.sweep_dir / "slurm", plan.threads, plan.workers_given, plan.options
        ),
    },
    "backend",
)


def _check_backend(backend: str) -> None:
    """A backend of :data:`BACKENDS` or an importable 'module:attribute' (one line naming it)."""
    if backend in BACKENDS:
        return
    if is_import_path(backend):
        try:
            BACKENDS[backend]
        except ValueError as err:
            raise ConfigError(f"backend: {err}") from None
    raise ConfigError(
        f"backend: unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}, or 'module:attribute'"
    )


def check_options(backend: str, options: BackendOptions | None) -> BackendOptions:
    """The backend exists and the options suit it (one line naming the option otherwise)."""
    _check_backend(backend)
    options = options or BackendOptions()
    if backend == "local":
        for name in ("cpus_per_run", "gpus_per_run"):
            if getattr(options, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"{flag}: only for --backend ray or slurm (the local pool: --workers, and each "
                    "config's `threads` and `device`)"
                )
    for name in ("cpus_per_run", "gpus_per_run"):
        v = getattr(options, name)
        if v is not None and (v < 0 or (name == "cpus_per_run" and v == 0)):
            raise ConfigError(
                f"--{name.replace('_', '-')}: must be {'>' if name[0] == 'c' else '>='} 0 (got {v})"
            )
    if backend == "slurm":
        _check_slurm(options)
    return options


def _check_slurm(options: BackendOptions) -> None:
    for name in ("cpus_per_run", "gpus_per_run"):
        v = getattr(options, name)
        if v is not None and v != int(v):
            raise ConfigError(f"--{name.replace('_', '-')}: whole numbers under --backend slurm (got {v})")
    if (options.slurm.cluster or "slurm") == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "--backend slurm: no sbatch on this machine's PATH; give --slurm-cluster local (or "
            "slurm: {cluster: local} in the sweep file) to run the array as local processes"
        )


def make_backend(backend: str, plan: SweepPlan, address: str | None) -> Backend:
    """The backend ``backend`` (a name of :data:`BACKENDS` or 'module:attribute') for ``plan``."""
    return BACKENDS[backend](plan, address)
