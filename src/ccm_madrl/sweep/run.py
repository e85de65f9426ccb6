"""Running a sweep: the sweep directory (locked, its plan checked), the manifest, the backend, and
the results as they come back (:func:`run_sweep`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..experiment.config import ConfigError
from ..experiment.stop import StopToken
from ..rundir import SWEEP_FILE, RunDir, SweepDir, dir_lock, inside
from .backends import check_options, make_backend
from .jobs import Job, PackJob, RunJob
from .manifest import Manifest
from .options import BackendOptions, SlurmOptions, SweepOptions
from .plan import RunSpec, SweepPlan, SweepSpec, expand, load_sweep, plan_sweep
from .progress import SweepProgress


@dataclass
class SweepResult:
    sweep_dir: Path
    total: int
    done: int  # runs finished as done (this time or before)
    failed: int
    skipped: int  # runs finished before (done or diverged)
    diverged: int = 0  # runs whose training diverged (this time or before): results, not failures
    busy: int = 0  # runs another live process was training (skipped; run the sweep again later)


class SweepDirBusy(ValueError):
    """Another live process runs a sweep in this directory."""


SWEEP_BUSY_HINT = "; wait for that sweep to end or stop it (Ctrl-C / SIGTERM), then run again to resume"


def run_sweep(
    path: str | Path,
    out: str | Path | None = None,
    *,
    opts: SweepOptions | None = None,
    stop: StopToken | None = None,
    **fields,
) -> SweepResult:
    """Run (or resume) the sweep file ``path`` as ``opts`` says (:class:`SweepOptions`; ``out`` and
    ``fields``, any of its fields by name, replace those of ``opts``). ``stop`` (default: a new
    token, flagged by SIGINT / SIGTERM to this process) is the sweep's stop token: once requested
    every running run checkpoints and ends ``interrupted``, queued runs do not start, and
    KeyboardInterrupt is raised.

    The sweep directory is locked (``rundir.dir_lock``) for the life of the call: a second sweep
    of it is refused (:class:`SweepDirBusy`). A directory that holds another plan (other run ids or
    another sweep name in its manifest) is refused unless ``extend`` (its runs are then added to
    the manifest; the previous ``sweep.yaml`` is kept as ``sweep.<k>.yaml``)."""
    opts = replace(opts or SweepOptions(), **fields, **({} if out is None else {"out": out}))
    spec, base = load_sweep(path, opts.set_, opts.seeds, opts.axes, opts.name)
    opts = replace(
        opts, backend_options=check_options(opts.backend, with_file_slurm(spec, opts.backend_options))
    )
    runs = expand(spec, base, str(path))
    planned = [r.id for r in runs]
    if opts.only is not None:
        keep = set(opts.only)
        runs = [r for r in runs if r.id in keep]
    sweep_dir = Path(opts.out) if opts.out else inside("sweeps", spec.name)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(f"sweep directory {sweep_dir}: exists and is not a directory")
    sd = SweepDir(sweep_dir)
    sd.check_safe()  # a received sweep directory: no link for a write to follow
    check_plan(sd, spec.name, planned, opts.extend)  # before anything is created
    from ..experiment.memory import check_memory

    for r in runs:  # an impossible size is refused before the sweep directory exists
        check_memory(r.config, opts.pack or 1)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with dir_lock(sweep_dir, "sweep directory", SweepDirBusy, SWEEP_BUSY_HINT):
        check_plan(sd, spec.name, planned, opts.extend)  # again, now that no other sweep can write it
        return _run_sweep(spec, base, runs, sd, opts, stop or StopToken())


def with_file_slurm(spec: SweepSpec, options: BackendOptions | None) -> BackendOptions:
    """The options with the sweep file's ``slurm:`` block under those given on the command line."""
    options = options or BackendOptions()
    if spec.slurm:
        given = {k: v for k, v in vars(options.slurm).items() if v != getattr(SlurmOptions(), k)}
        options = replace(options, slurm=SlurmOptions(**{**spec.slurm, **given}))
    return options


def check_plan(sd: SweepDir, name: str, planned: list[str], extend: bool) -> None:
    """Refuse (ConfigError) a sweep directory whose manifest holds another plan than ``planned``
    (the run ids of the sweep ``name``), unless ``extend``. The same plan again resumes it."""
    man = sd.manifest()
    old = [e.get("id") for e in man.get("runs", []) if isinstance(e, dict)]
    if not old or extend or (set(old) == set(planned) and man.get("sweep") == name):
        return
    new, gone = len(set(planned) - set(old)), len(set(old) - set(planned))
    raise ConfigError(
        f"sweep directory {sd.path}: holds another plan (sweep {man.get('sweep')!r}, {len(old)} runs; this one: "
        f"sweep {name!r}, {len(planned)} runs, {new} not in it, {gone} of its runs not in this one); run the "
        "same file and flags again to resume it, give another --out, or pass --extend to add this plan's runs"
    )


def _write_sweep_file(spec: SweepSpec, base: dict, sd: SweepDir, extend: bool) -> None:
    """``sweep.yaml``: the sweep file as resolved (base inlined); under ``extend`` the plan it
    extends is kept as ``sweep.<k>.yaml``."""
    resolved = spec.model_dump()
    resolved["base"] = base
    text = yaml.safe_dump(resolved, sort_keys=False)
    if extend and sd.sweep_file.exists() and sd.sweep_file.read_text() != text:
        k = 1 + sum(1 for _ in sd.path.glob("sweep.*.yaml"))
        sd.write_file(f"sweep.{k}.yaml", sd.sweep_file.read_bytes())
    sd.write_file(SWEEP_FILE, text)


def _record_plan(man: Manifest, runs: list[RunSpec], sd: SweepDir, plan: SweepPlan, name: str) -> None:
    """Every run's manifest entry: finished ones as they ended, the others pending; a run another
    sweep process trains now keeps its entry as that one wrote it."""
    for r in runs:
        man.update(r.id, overrides=r.overrides, run_dir=str(sd.run(r.id).path.relative_to(sd.path)),
                   episodes=r.config.training.episodes)  # fmt: skip
        if r.id in plan.done:
            state, eps = plan.done[r.id]
            man.update(r.id, status=state, episodes_done=eps)
        elif r.id not in plan.busy:
            man.update(r.id, status="pending", error=None, traceback=None)
    man.save(name)


class _Results:
    """What comes back from the backend: each run's result into the manifest, the counts and the
    progress display; a pack job's result is split into its members' results."""

    def __init__(self, man: Manifest, name: str, plan: SweepPlan, bar: SweepProgress, jobs: list[Job],
                 planned: dict[str, int], episodes_now=None):  # fmt: skip
        self.man, self.name, self.bar = man, name, bar
        self.planned, self.episodes_now = planned, episodes_now  # run id -> its episodes; a counter
        self.packs = {j.id: j for j in jobs if isinstance(j, PackJob)}
        self.counts = {"done": 0, "failed": 0, "interrupted": 0, "diverged": 0}
        for state, _ in plan.done.values():
            self.counts[state] += 1

    def on_done(self, jid: str, res: dict) -> None:
        if jid in self.packs:
            for m in self.packs[jid].members:
                self.on_done(m.id, res.get("pack", {}).get(m.id, res))
            return
        res = {k: v for k, v in res.items() if k != "pack"}
        if res["status"] == "queued":  # stopped before it started
            return
        self.counts[res["status"]] += 1
        self.man.update(jid, **res)
        self.man.save(self.name)
        self.bar.run_finished(
            res["status"],
            res.get("episodes_done"),
            self.planned.get(jid),
            self.episodes_now() if self.episodes_now else None,
        )


def _record_stopped(man: Manifest, jobs: list[RunJob], name: str) -> None:
    """After a stop: where each unfinished run stopped (``interrupted``), or ``pending`` for one
    that never started (to run on the next call)."""
    for job in jobs:
        if man.entries[job.id].get("status") != "queued":
            continue
        st = RunDir(job.run_dir).status()
        if st.get("state") in ("interrupted", "running"):
            man.update(job.id, status="interrupted", episodes_done=st.get("episodes_done"))
        else:
            man.update(job.id, status="pending")
    man.save(name)


def _run_sweep(spec: SweepSpec, base: dict, runs: list[RunSpec], sd: SweepDir, opts: SweepOptions,
               stop: StopToken) -> SweepResult:  # fmt: skip
    sd.runs_dir.mkdir(parents=True, exist_ok=True)
    _write_sweep_file(spec, base, sd, opts.extend)
    plan = plan_sweep(runs, sd.path, opts.backend, opts.workers, opts.backend_options)
    man = Manifest(sd.path)
    _record_plan(man, runs, sd, plan, spec.name)

    def episodes_now() -> int:
        return sum(int(sd.run(r.id).status().get("episodes_done", 0)) for r in runs)

    def poll() -> None:
        bar.episodes(episodes_now())

    planned = {r.id: r.config.training.episodes for r in runs}
    # a run finished before this call counts with the episodes it ended at (an early stop, a divergence)
    total_eps = sum(int(plan.done[r][1] or 0) if r in plan.done else n for r, n in planned.items())
    bar = SweepProgress(opts.progress, spec.name, len(runs), len(plan.done), total_eps, episodes_now())
    backend = make_backend(opts.backend, plan, opts.address)
    jobs: list[Job] = list(plan.jobs)
    if opts.pack is not None:  # whole packs are the backend's jobs; results come back per member run
        from .packing import pack_jobs

        jobs = pack_jobs(plan.jobs, opts.pack, plan.workers)
    results = _Results(man, spec.name, plan, bar, jobs, planned, episodes_now)
    try:
        with bar, stop.installed():
            if jobs:
                for job in plan.jobs:
                    man.update(job.id, status="queued")
                man.save(spec.name)
                if opts.progress:  # what runs where, and how many at once
                    print(f"{spec.name}: {backend.describe(len(jobs))}", flush=True)
                backend.run(jobs, results.on_done, poll, stop)
            poll()
    except KeyboardInterrupt:
        _record_stopped(man, plan.jobs, spec.name)
        raise
    c = results.counts
    return SweepResult(
        sd.path, len(runs), c["done"], c["failed"], len(plan.done), c["diverged"], len(plan.busy)
    )
