"""Sweeps: a base config plus axes (cartesian product of any fields) and a seed list, expanded into
runs with stable ids, run by a backend (a local process pool or Ray tasks) into one directory.

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

Re-running a sweep skips finished runs, resumes interrupted ones from their checkpoints and retries
failed ones; a failing run is recorded with its traceback and does not stop the others.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..rundir import RunDir, SweepDir
from .config import (
    ConfigError,
    ExperimentConfig,
    _format_validation_error,
    apply_overrides,
    build_config,
    load_yaml,
    parse_value,
)


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1)
    base: dict | str = Field(default_factory=dict, description="base config: inline mapping or YAML path")
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] | int = Field(default_factory=lambda: [0])
    description: str = ""

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"axis {k!r} has no values")
            if k == "seed":
                raise ValueError("use 'seeds:' rather than an axis named 'seed'")
        return v

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass
class RunSpec:
    id: str
    overrides: dict[str, Any]
    config: ExperimentConfig


def load_sweep(
    path: str | Path,
    set_: Iterable[str] = (),
    seeds: str | None = None,
    axes: Iterable[str] = (),
    name: str | None = None,
) -> tuple[SweepSpec, dict]:
    """Read a sweep file; returns the spec and the resolved base config mapping.

    Command-line changes (recorded in the sweep directory's ``sweep.yaml``): ``set_`` overrides
    fields of the base config (``training.episodes=300``); ``seeds`` replaces the seeds (``3`` or
    ``[0, 5]``); each of ``axes`` replaces or adds an axis (``agent.actor_lr=[1e-4, 0.1]``);
    ``name`` renames the sweep."""
    path = Path(path)
    data = load_yaml(path)
    for item in axes:
        key, sep, text = item.partition("=")
        vals = parse_value(text)
        if not sep or not key.strip() or not isinstance(vals, list):
            raise ConfigError(f"--axis {item!r}: expected KEY=[v1, v2, ...]")
        data.setdefault("axes", {})[key.strip()] = vals
    if seeds is not None:
        data["seeds"] = parse_value(seeds)
    if name:
        data["name"] = name
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, str(path))) from None
    base = spec.base
    if isinstance(base, str):
        base_path = (path.parent / base).resolve()
        base = load_yaml(base_path)
    base = apply_overrides(base, set_)
    return spec, base


def expand(spec: SweepSpec, base: dict, source: str = "") -> list[RunSpec]:
    """The runs of a sweep, in a stable order (axes as written, then seeds). Each value is checked
    by building the full config; errors name the axis and value."""
    keys = list(spec.axes)
    runs: list[RunSpec] = []
    seen: dict[str, dict] = {}
    for values in itertools.product(*(spec.axes[k] for k in keys)):
        for seed in spec.seed_list():
            ov = dict(zip(keys, values))
            ov["seed"] = seed
            data = apply_overrides(base, [])
            for k, v in ov.items():
                node = data
                parts = k.split(".")
                for p in parts[:-1]:
                    node = node.setdefault(p, {})
                    if not isinstance(node, dict):
                        raise ConfigError(f"sweep axis {k!r}: {p!r} is not a config section")
                node[parts[-1]] = v
            data.setdefault("name", spec.name)
            try:
                cfg = ExperimentConfig.model_validate(data)
            except ValidationError as err:
                raise ConfigError(
                    _format_validation_error(err, f"{source or spec.name} (run {ov})").replace(
                        "invalid configuration", "invalid sweep value"
                    )
                ) from None
            rid = cfg.id()
            if rid in seen:
                raise ConfigError(f"sweep {spec.name}: runs {seen[rid]} and {ov} resolve to the same config")
            seen[rid] = ov
            runs.append(RunSpec(rid, ov, cfg))
    return runs


# ------------------------------------------------------------------------------- the worker
def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset`` or a container's
    cpuset), else the machine's count. Sizes the pool and each worker's torch threads outside a run,
    so that runs never ask for more threads than there are cores (oversubscribed torch threads slow a
    run down many times over); a training run itself uses its config's ``threads`` (default 1)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_one(cfg_json: str, run_dir: str, threads: int) -> dict:
    """Train one run (in a worker process or Ray task); never raises: failures come back as data."""
    import torch

    from .runner import train

    global _ACTIVE
    t0 = time.time()
    if _stopping():  # the sweep is gone or stopping: do not start another run
        return {"status": "interrupted", "wall_time_s": 0.0}
    _ACTIVE = True
    try:
        if threads > 0:
            torch.set_num_threads(threads)
        data = json.loads(cfg_json)
        if isinstance(data, list):  # a pack job: several runs as one program (experiment/pack.py)
            from .pack import run_pack_job

            return run_pack_job(data, json.loads(run_dir), t0)
        cfg = build_config(data)
        s = train(cfg, run_dir, progress=False, quiet=True)
        return {
            "status": "done",
            "episodes_done": s.episodes_done,
            "final_return": s.final_return,
            "wall_time_s": time.time() - t0,
        }
    except KeyboardInterrupt:  # SIGINT / SIGTERM: the run checkpointed and can resume
        return {"status": "interrupted", "wall_time_s": time.time() - t0}
    except BaseException as err:  # noqa: BLE001 - isolate every failure of a run, even SystemExit
        return {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
            "wall_time_s": time.time() - t0,
        }
    finally:
        _ACTIVE = False


# ------------------------------------------------------------------------------- manifest
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
    """Each run's state in a sweep directory: not-started (no status.json yet), running,
    interrupted, failed, done, or stale (its status says running but its process is gone or its
    heartbeat stopped; see ``rundir.effective_state``)."""
    sd = SweepDir(sweep_dir)
    return {rid: sd.run(rid).state() for rid in ids}


# ------------------------------------------------------------------------------- backends
def _drain(
    ids: dict, wait_some: Callable, result: Callable, on_done: Callable, poll: Callable, what: str
) -> None:
    """Collect results as runs finish: ``wait_some(pending) -> (done, pending)``; a handle whose
    result raises (the worker or task itself died) is recorded as a failed run."""
    pending = list(ids)
    while pending:
        done, pending = wait_some(pending)
        for h in done:
            try:
                res = result(h)
            except Exception as err:  # noqa: BLE001
                res = {
                    "status": "failed",
                    "error": f"{what} died: {err}",
                    "traceback": traceback.format_exc(),
                }
            on_done(ids[h], res)
        poll()


# State of a pool worker (set by _watch_parent): the sweep process, the sweep's stop event, whether a
# run is in progress and whether this worker was told to stop.
_PARENT: int | None = None
_STOP = None
_ACTIVE = False
_TERMINATED = False


def _orphaned() -> bool:
    return _PARENT is not None and os.getppid() != _PARENT


def _stopping() -> bool:
    return _orphaned() or _TERMINATED or (_STOP is not None and _STOP.is_set())


def _on_sigterm(signum, frame) -> None:
    """A worker's SIGTERM outside a run's own handler: remember it (``run_one`` starts no new run) and
    interrupt what is in progress; an idle worker stays alive so the pool can shut down cleanly."""
    global _TERMINATED
    _TERMINATED = True
    if _ACTIVE:
        raise KeyboardInterrupt


def _watch_parent(parent: int, stop=None) -> None:
    """Pool-worker initializer: once the sweep's ``stop`` event is set, stop this worker's run as a
    SIGTERM would (it checkpoints after the current episode); once the sweep process is gone (e.g.
    SIGKILL), do the same and leave. ``run_one`` starts no new run once the sweep is gone, its
    ``stop`` event is set or this worker got a SIGTERM."""
    import threading

    global _PARENT, _STOP
    _PARENT = parent
    _STOP = stop
    signal.signal(signal.SIGTERM, _on_sigterm)

    def watch() -> None:
        signalled = False
        while not _orphaned():
            if not signalled and _ACTIVE and _STOP is not None and _STOP.is_set():
                os.kill(os.getpid(), signal.SIGTERM)  # the run's handler: end the episode, checkpoint
                signalled = True
            time.sleep(0.2)
        for _ in range(600):  # keep asking until the run has stopped (checkpointed); then leave
            if not _ACTIVE:
                os._exit(1)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _local_backend(
    jobs: list[tuple[str, str, str]], workers: int, threads: int, on_done: Callable, poll: Callable
) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_watch_parent, initargs=(os.getpid(), stop)
    ) as pool:
        futs = {pool.submit(run_one, cfg_json, run_dir, threads): rid for rid, cfg_json, run_dir in jobs}

        def wait_some(pending):
            done, rest = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            return done, list(rest)

        try:
            _drain(futs, wait_some, lambda f: f.result(), on_done, poll, "worker process")
        except KeyboardInterrupt:  # queued runs never start; running ones checkpoint and stop
            # Runs already handed to a worker's queue see the event and do not start. A SIGTERM sent
            # to the sweep alone reaches no worker (Ctrl-C reaches the whole group): each worker
            # watches the event and stops its running run, which ends its episode and checkpoints.
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _ray_backend(
    jobs: list[tuple[str, str, str]], address: str | None, threads: int, on_done: Callable, poll: Callable
) -> None:
    try:
        import ray
    except ImportError as err:
        raise ConfigError("backend 'ray' needs Ray: pip install 'ccm_madrl[ray]'") from err
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_one)
        refs = {remote.remote(cfg_json, run_dir, threads): rid for rid, cfg_json, run_dir in jobs}
        try:
            _drain(
                refs, lambda p: ray.wait(p, num_returns=1, timeout=1.0), ray.get, on_done, poll, "ray task"
            )
        except KeyboardInterrupt:  # Ray raises KeyboardInterrupt in running tasks: they checkpoint
            for ref in refs:
                ray.cancel(ref)
            ray.wait(list(refs), num_returns=len(refs), timeout=60.0)
            raise
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------ plan and backends
Job = tuple[str, str, str]  # (run id, the run's config as JSON, its run directory)


class Backend(Protocol):
    """Runs ``run_one(config_json, run_dir, threads)`` for every job somewhere; calls
    ``on_done(run_id, result)`` as each finishes and ``poll()`` about once a second; on
    KeyboardInterrupt stops its running runs (each checkpoints) and re-raises."""

    def run(
        self, jobs: list[Job], on_done: Callable[[str, dict], None], poll: Callable[[], None]
    ) -> None: ...


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep will do, computed without side effects (:func:`plan_sweep`)."""

    done: dict[str, int]  # finished runs (skipped): run id -> episodes done
    jobs: list[Job]  # the runs to (re)start or resume, in order
    workers: int
    threads: int  # torch threads per worker (the runs' own config sets their threads)


def plan_sweep(runs: list, sweep_dir: Path, backend: str, workers: int | None) -> SweepPlan:
    """Which runs are done, which to run, and with how many workers and threads."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    sd, done, jobs = SweepDir(sweep_dir), {}, []
    for r in runs:
        rd = sd.run(r.id)
        if rd.is_done(r.id):
            done[r.id] = rd.status().get("episodes_done")
        else:
            jobs.append((r.id, r.config.model_dump_json(), str(rd.path)))
    cores = usable_cores()
    workers = max(1, min(workers or cores, len(jobs) or 1))
    threads = max(1, cores // workers) if backend == "local" else 1
    return SweepPlan(done, jobs, workers, threads)


@dataclass
class LocalPool:
    """A process pool on this machine (spawned workers)."""

    workers: int
    threads: int

    def run(self, jobs: list[Job], on_done: Callable, poll: Callable) -> None:
        _local_backend(jobs, self.workers, self.threads, on_done, poll)


@dataclass
class RayTasks:
    """One Ray task per run (a local Ray instance, or the cluster at ``address``)."""

    address: str | None
    threads: int = 1

    def run(self, jobs: list[Job], on_done: Callable, poll: Callable) -> None:
        _ray_backend(jobs, self.address, self.threads, on_done, poll)


# backend name -> factory(plan, address) -> Backend
BACKENDS: dict[str, Callable[[SweepPlan, str | None], Backend]] = {
    "local": lambda plan, address: LocalPool(plan.workers, plan.threads),
    "ray": lambda plan, address: RayTasks(address, plan.threads),
}


@dataclass
class SweepResult:
    sweep_dir: Path
    total: int
    done: int
    failed: int
    skipped: int


def run_sweep(
    path: str | Path,
    out: str | Path | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    only: Iterable[str] | None = None,
    set_: Iterable[str] = (),
    seeds: str | None = None,
    axes: Iterable[str] = (),
    name: str | None = None,
    pack: int | None = None,
) -> SweepResult:
    """Run (or resume) a sweep. ``out`` defaults to ``sweeps/<name>``; see :func:`load_sweep` for
    ``set_``, ``seeds``, ``axes`` and ``name``. ``pack``: train compatible runs in packs of at most
    this many (0: chosen from memory and device; ``experiment/pack.py``), one run directory each."""
    spec, base = load_sweep(path, set_, seeds, axes, name)
    runs = expand(spec, base, str(path))
    if only is not None:
        keep = set(only)
        runs = [r for r in runs if r.id in keep]
    sweep_dir = Path(out) if out else Path("sweeps") / spec.name
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(f"sweep directory {sweep_dir}: exists and is not a directory")
    sd = SweepDir(sweep_dir)
    sd.runs_dir.mkdir(parents=True, exist_ok=True)
    resolved = spec.model_dump()
    resolved["base"] = base
    sd.sweep_file.write_text(yaml.safe_dump(resolved, sort_keys=False))
    plan = plan_sweep(runs, sweep_dir, backend, workers)
    man = Manifest(sweep_dir)
    for r in runs:
        man.update(
            r.id,
            overrides=r.overrides,
            run_dir=str(sd.run(r.id).path.relative_to(sweep_dir)),
            episodes=r.config.training.episodes,
        )
        if r.id in plan.done:
            man.update(r.id, status="done", episodes_done=plan.done[r.id])
        else:
            man.update(r.id, status="pending", error=None, traceback=None)
    man.save(spec.name)
    jobs, skipped = plan.jobs, len(plan.done)
    counts = {"done": 0, "failed": 0, "interrupted": 0}
    total_eps = sum(r.config.training.episodes for r in runs)

    def episodes_now() -> int:
        return sum(int(sd.run(r.id).status().get("episodes_done", 0)) for r in runs)

    bar = _SweepProgress(progress, spec.name, len(runs), skipped, total_eps, episodes_now())

    backend_jobs, members = jobs, {}
    if pack is not None:  # whole packs are the backend's jobs; results come back per member run
        from .pack import pack_jobs

        backend_jobs, members = pack_jobs(jobs, pack, plan.workers)

    def on_done(rid: str, res: dict) -> None:
        if rid in members:
            for m in members[rid]:
                on_done(m, res.get("pack", {}).get(m, res))
            return
        res = {k: v for k, v in res.items() if k != "pack"}
        counts[res["status"]] += 1
        man.update(rid, **res)
        man.save(spec.name)
        bar.run_finished(res["status"])

    def poll() -> None:
        bar.episodes(episodes_now())

    def terminate(signum, frame):  # SIGTERM: stop like Ctrl-C
        raise KeyboardInterrupt

    try:
        old_term = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        old_term = None
    try:
        with bar:
            if jobs:
                for rid, _, _ in jobs:
                    man.update(rid, status="queued")
                man.save(spec.name)
                BACKENDS[backend](plan, address).run(backend_jobs, on_done, poll)
            poll()
    except KeyboardInterrupt:  # record where each unfinished run stopped, then stop
        for rid, _, run_dir in jobs:
            st = RunDir(run_dir).status()
            if man.entries[rid].get("status") == "queued" and st.get("state") in ("interrupted", "running"):
                man.update(rid, status="interrupted", episodes_done=st.get("episodes_done"))
        man.save(spec.name)
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return SweepResult(sweep_dir, len(runs), counts["done"] + skipped, counts["failed"], skipped)


class _SweepProgress:
    """One progress display for the whole sweep: runs finished and episodes done over all runs."""

    def __init__(self, enabled: bool, name: str, runs: int, skipped: int, total_eps: int, eps_done: int):
        self.enabled = enabled
        self.prog = None
        if enabled:
            from .._progress import progress_bar

            self.prog = progress_bar()
            self.t_runs = self.prog.add_task(f"{name}: runs", total=runs, completed=skipped)
            self.t_eps = self.prog.add_task("episodes", total=total_eps, completed=eps_done)
            self.failed = 0

    def __enter__(self):
        if self.prog:
            self.prog.__enter__()
        return self

    def __exit__(self, *exc):
        if self.prog:
            self.prog.__exit__(*exc)

    def run_finished(self, status: str) -> None:
        if self.prog:
            self.prog.advance(self.t_runs)
            if status == "failed":
                self.failed += 1
                self.prog.update(self.t_runs, description=f"runs ([red]{self.failed} failed[/red])")

    def episodes(self, n: int) -> None:
        if self.prog:
            self.prog.update(self.t_eps, completed=n)
