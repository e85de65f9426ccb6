"""Sweeps: a base config plus axes (cartesian product of any fields) and a seed list, expanded into
runs with stable ids, run by a backend (a local process pool, Ray tasks or a SLURM array) into one
directory.

Sweep file::

    name: table1_s10
    base: ../base.yaml            # a path (relative to this file) or an inline mapping
    axes:                         # dotted field -> list of values; the grid is their product
      agent.actor_lr: [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1]
      agent.critic_lr: [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1]
    seeds: [0, 1, 2]              # or an int n for seeds 0..n-1

Sweep directory::

    SWEEP_DIR/sweep.yaml          the sweep file as resolved (base inlined)
    SWEEP_DIR/manifest.json       one entry per run: id, overrides, status, episodes, result, error
    SWEEP_DIR/runs/<id>/          a run directory (see the runner)

Re-running a sweep skips finished runs (done, or diverged: ``rundir.FINISHED_STATES``), resumes
interrupted ones from their checkpoints and retries failed ones; a failing run is recorded with its
traceback and does not stop the others.

Modules, one job each: ``plan`` (the sweep file -> runs with ids -> what to run), ``options`` (the
typed options of a sweep and of its backend), ``jobs`` (what a backend runs: a run or a pack),
``packing`` (which runs train together), ``control`` (one job where it runs; waiting, collecting,
stopping), ``backends`` with ``local``, ``ray_tasks`` and ``slurm`` (where jobs run),
``manifest``, ``progress`` and ``run`` (:func:`run_sweep`).
"""

from .backends import BACKENDS, Backend, check_options
from .control import run_one, usable_cores, wait_released
from .jobs import Job, PackJob, RunJob
from .local import LocalPool
from .manifest import Manifest, run_states
from .options import BackendOptions, SlurmOptions, SweepOptions
from .packing import pack_jobs
from .plan import RunSpec, SweepPlan, SweepSpec, expand, load_sweep, plan_sweep
from .ray_tasks import RayTasks
from .run import SweepDirBusy, SweepResult, run_sweep
from .slurm import SlurmArray

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "Job",
    "LocalPool",
    "Manifest",
    "PackJob",
    "RayTasks",
    "RunJob",
    "RunSpec",
    "SlurmArray",
    "SlurmOptions",
    "SweepDirBusy",
    "SweepOptions",
    "SweepPlan",
    "SweepResult",
    "SweepSpec",
    "check_options",
    "expand",
    "load_sweep",
    "pack_jobs",
    "plan_sweep",
    "run_one",
    "run_sweep",
    "run_states",
    "usable_cores",
    "wait_released",
]
