"""The options of a sweep: how it is run (:class:`SweepOptions`, the arguments of ``run_sweep``),
the resources of each run on a backend (:class:`BackendOptions`) and SLURM's job settings
(:class:`SlurmOptions`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SlurmOptions:
    """SLURM job settings (``--slurm-*`` options, or a ``slurm:`` block in the sweep file)."""

    partition: str | None = None
    time_min: int = 24 * 60  # the job's time limit
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None  # at most this many array tasks at once (default: --workers)
    # None or "slurm": sbatch (refused when it is not on the PATH); "local": local processes
    cluster: str | None = None
    additional: dict = field(default_factory=dict)  # any other sbatch option (key without --)


@dataclass(frozen=True)
class BackendOptions:
    """How a backend runs each job: resources per run (Ray task / SLURM array task) and where the
    package comes from. ``None``: the backend's default."""

    cpus_per_run: float | None = None  # Ray: num_cpus per task (default 1); SLURM: cpus_per_task
    gpus_per_run: float | None = None  # Ray: num_gpus per task (fractions share a GPU); SLURM: gpus
    ship_package: bool | None = None  # Ray: runtime_env py_modules; None = when --address is given
    max_retries: int = 3  # Ray: a task lost with its node or worker is run again (it resumes)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)


@dataclass(frozen=True)
class SweepOptions:
    """How ``run_sweep`` runs a sweep file (the ``sweep`` command's options).

    ``set_``, ``seeds``, ``axes`` and ``name`` change the sweep file as read (``plan.load_sweep``);
    ``only`` restricts the runs to these ids; ``pack`` trains compatible runs in packs of at most
    this many (0: chosen from memory and device); ``extend`` adds this plan's runs to a sweep
    directory that holds another plan."""

    out: str | Path | None = None  # the sweep directory; None: sweeps/<name>
    backend: str = "local"  # a name of sweep.backends.BACKENDS, or 'module:attribute'
    workers: int | None = None  # local: processes; ray: tasks in flight; slurm: array tasks at once
    address: str | None = None  # ray: the cluster's address
    progress: bool = True
    only: Iterable[str] | None = None
    set_: Iterable[str] = ()
    seeds: str | None = None
    axes: Iterable[str] = ()
    name: str | None = None
    backend_options: BackendOptions | None = None
    pack: int | None = None
    extend: bool = False
