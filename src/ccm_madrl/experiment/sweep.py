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

Re-running a sweep skips finished runs (done, or diverged: ``rundir.FINISHED_STATES``), resumes
interrupted ones from their checkpoints and retries failed ones; a failing run is recorded with its
traceback and does not stop the others.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..agents.config import RESOLVE
from ..rundir import STALE_AFTER_S, SWEEP_FILE, RunDir, SweepDir, dir_lock, inside, write_json
from .config import (
    ConfigError,
    ExperimentConfig,
    Label,
    _format_validation_error,
    apply_overrides,
    build_config,
    load_yaml,
    parse_value,
)
from .stop import StopToken


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Label = Field(..., description="the sweep's label: its directory is sweeps/<name>")
    base: dict | str = Field(default_factory=dict, description="base config: inline mapping or YAML path")
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] | int = Field(default_factory=lambda: [0])
    description: str = ""
    slurm: dict[str, Any] = Field(default_factory=dict, description="SlurmOptions fields (backend slurm)")

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"axis {k!r} has no values")
            if k == "seed":
                raise ValueError("use 'seeds:' rather than an axis named 'seed'")
        return v

    @field_validator("slurm")
    @classmethod
    def _slurm(cls, v: dict[str, Any]) -> dict[str, Any]:
        known = SlurmOptions.__dataclass_fields__
        for k in v:
            if k not in known:
                raise ValueError(f"slurm.{k}: unknown key; allowed: {', '.join(known)}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | int) -> list[int] | int:
        if isinstance(v, int) and v < 1:
            raise ValueError("a count must be >= 1, or a list of seeds, e.g. [0, 5]")
        if isinstance(v, list):
            if not v:
                raise ValueError("the list is empty; give at least one seed, e.g. [0]")
            if any(s < 0 for s in v):
                raise ValueError("a seed must be >= 0")
            if len(set(v)) != len(v):
                raise ValueError("a seed is listed twice")
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
    set_ = _axis_overrides(data, list(set_))
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


def _axis_overrides(data: dict, set_: list[str]) -> list[str]:
    """Hydra's rule for an override of a key the sweep varies: ``--set KEY=V`` (or a bare ``KEY=V``)
    where ``KEY`` is an axis replaces the axis by ``[V]``, and ``seed=V`` replaces the seeds by
    ``[V]`` (a base value would be overwritten by the axis: silently ignored). Returns the other
    overrides, for the base config."""
    axes = data.get("axes") if isinstance(data.get("axes"), dict) else {}
    rest = []
    for item in set_:
        key, sep, text = item.partition("=")
        key = key.strip()
        if sep and key in axes:
            axes[key] = [parse_value(text)]
        elif sep and key == "seed":
            data["seeds"] = [parse_value(text)]
        else:
            rest.append(item)
    return rest


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
                cfg = ExperimentConfig.model_validate(data, context=RESOLVE)  # the user's sweep file
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


def run_one(cfg_json: str, run_dir: str, threads: int, stop: StopToken | None = None) -> dict:
    """Train one run (in a worker process, a Ray task or a SLURM job); never raises: failures come
    back as data. ``stop`` is the sweep's stop token (default: this process's own signals); a run it
    stops checkpoints and comes back ``interrupted``; one it stops before the start, or one that
    another live process has started since the sweep's plan, comes back ``queued`` (not started)."""
    import torch

    from .runner import RunDirBusy, train

    stop = stop or StopToken()
    t0 = time.time()
    where = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": t0}
    if stop.requested:  # the sweep is gone or stopping: do not start another run
        return {"status": "queued", "wall_time_s": 0.0}
    try:
        if threads > 0:
            torch.set_num_threads(threads)
        data = json.loads(cfg_json)
        dirs = json.loads(run_dir) if isinstance(data, list) else [run_dir]
        wait_released(dirs, stop)
        if isinstance(data, list):  # a pack job: several runs as one program (experiment/pack.py)
            from .pack import run_pack_job

            return {**run_pack_job(data, dirs, t0, stop=stop), **where}
        cfg = build_config(data)
        s = train(cfg, run_dir, progress=False, quiet=True, stop=stop)
        res = {"status": s.state, "episodes_done": s.episodes_done, "final_return": s.final_return}
        if s.state == "diverged":
            res["error"] = RunDir(run_dir).status().get("error")
    except KeyboardInterrupt:  # stopped (its token, a signal): the run checkpointed and can resume
        res = {"status": "interrupted"}
        if not run_dir.startswith("["):  # a single run: where it stopped (a pack's members: their status)
            res["episodes_done"] = RunDir(run_dir).status().get("episodes_done")
    except RunDirBusy as err:  # another process started it since the plan: not run here, not failed
        res = {"status": "queued", "busy": str(err)}
    except BaseException as err:  # noqa: BLE001 - isolate every failure of a run, even SystemExit
        res = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
    return {**res, **where, "wall_time_s": time.time() - t0}


STOP_WAIT_S = 60.0  # after a stop, how long the local pool waits for its workers before killing them
BUSY_GRACE_S = 5.0  # how long a sweep's plan waits for a run's claim by an exiting process to end


def wait_released(run_dirs: list[str], stop: StopToken, timeout_s: float = STALE_AFTER_S + 5.0) -> None:
    """Wait until no other live process trains these runs, at most ``timeout_s`` (a claim ends
    by then: its process exits, or its heartbeat goes stale). The plan skipped the runs that were
    busy then, so this waits only in a race: a Ray task retried while its first worker, on a lost
    node, is still exiting, or a second sweep that started one of these runs since; what is still
    busy afterwards is left to its process (``RunDirBusy``, result ``queued``)."""
    deadline = time.monotonic() + timeout_s
    while any(RunDir(d).trained_elsewhere() for d in run_dirs):
        if stop.requested or time.monotonic() > deadline:
            return
        time.sleep(0.5)


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


# ------------------------------------------------------------------------------ plan and backends
Job = tuple[str, str, str]  # (run id, the run's config as JSON, its run directory: an absolute path)


class Backend(Protocol):
    """Runs ``run_one(config_json, run_dir, threads, token)`` for every job somewhere; ``token`` is
    each run's stop token, a child of the sweep's ``stop`` (:meth:`StopToken.share` / ``child``) or
    one the backend reaches by a signal (``ray.cancel``, ``scancel``). Calls
    ``on_done(run_id, result)`` as each finishes and ``poll()`` about once a second. Once ``stop``
    is requested (a signal to the sweep), it stops every run (each checkpoints and comes back
    ``interrupted``; queued runs do not start), collects what comes back and raises
    KeyboardInterrupt. A backend only hands a job's config and directory to ``run_one``, so a job
    may later stand for a group of runs without changing the protocol."""

    def run(
        self, jobs: list[Job], on_done: Callable[[str, dict], None], poll: Callable[[], None], stop: StopToken
    ) -> None: ...

    def describe(self, jobs: int) -> str:
        """One line: the backend, where it runs (cluster) and how many jobs at once."""
        ...


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
    cluster: str | None = None  # None or "slurm": sbatch (refused when it is not on the PATH); "local": local processes
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
class SweepPlan:
    """What a sweep will do, computed without side effects (:func:`plan_sweep`)."""

    done: dict[str, tuple[str, int]]  # finished runs (skipped): run id -> (end state, episodes done)
    jobs: list[Job]  # the runs to (re)start or resume, in order
    workers: int
    threads: int  # torch threads per worker (the runs' own config sets their threads)
    options: BackendOptions = field(default_factory=BackendOptions)
    sweep_dir: Path | None = None  # absolute
    workers_given: int | None = None  # --workers as given (ray: tasks in flight; slurm: array tasks at once)
    # runs another live process trains now (skipped): run id -> who
    busy: dict[str, str] = field(default_factory=dict)


def check_options(backend: str, options: BackendOptions | None) -> BackendOptions:
    """The backend exists and the options suit it (one line naming the option otherwise)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
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
        for name in ("cpus_per_run", "gpus_per_run"):
            v = getattr(options, name)
            if v is not None and v != int(v):
                raise ConfigError(
                    f"--{name.replace('_', '-')}: whole numbers under --backend slurm (got {v})"
                )
        if (options.slurm.cluster or "slurm") == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError(
                "--backend slurm: no sbatch on this machine's PATH; give --slurm-cluster local (or "
                "slurm: {cluster: local} in the sweep file) to run the array as local processes"
            )
    return options


def plan_sweep(
    runs: list,
    sweep_dir: Path,
    backend: str,
    workers: int | None,
    options: BackendOptions | None = None,
) -> SweepPlan:
    """Which runs are done, which to run, and with how many workers and threads. Run directories
    are resolved to absolute paths here, on the driver: a Ray task or a SLURM job writes exactly
    there whatever its node and working directory."""
    options = check_options(backend, options)
    sd, done, busy, jobs, workers_given = SweepDir(Path(sweep_dir).resolve()), {}, {}, [], workers
    claimed = []
    for r in runs:
        rd = sd.run(r.id)
        finished = rd.finished_state(r.id)
        if finished:
            done[r.id] = (finished, rd.status().get("episodes_done"))
        elif rd.trained_elsewhere():
            claimed.append(r)
        else:
            jobs.append((r.id, r.config.model_dump_json(), str(rd.path)))
    # a process killed a moment ago may still be exiting: its claim ends within the grace period
    deadline = time.monotonic() + BUSY_GRACE_S
    while claimed and time.monotonic() < deadline and any(sd.run(r.id).trained_elsewhere() for r in claimed):
        time.sleep(0.2)
    for r in claimed:
        rd = sd.run(r.id)
        if who := rd.trained_elsewhere():
            busy[r.id] = who
        else:
            jobs.append((r.id, r.config.model_dump_json(), str(rd.path)))
    cores = usable_cores()
    workers = max(1, min(workers or cores, len(jobs) or 1))
    if backend == "local":
        threads = max(1, cores // workers)
    else:
        threads = max(1, int(options.cpus_per_run or 1))
    return SweepPlan(done, jobs, workers, threads, options, sd.path, workers_given, busy)


def _drain_once(handles: dict, wait_some: Callable, result: Callable, on_done: Callable, what: str) -> None:
    """Collect the results that are ready: ``wait_some(handles) -> done handles`` (waits about a
    second at most); a handle whose result raises (its worker, task or job died) is recorded as a
    failed run."""
    for h in wait_some(list(handles)):
        try:
            res = result(h)
        except Exception as err:  # noqa: BLE001
            res = {"status": "failed", "error": f"{what} died: {err}", "traceback": traceback.format_exc()}
        on_done(handles.pop(h), res)


def _drain(handles: dict, wait_some, result, on_done, poll, stop: StopToken, what: str) -> None:
    """Collect every result (see :func:`_drain_once`), calling ``poll()`` in between; raises
    KeyboardInterrupt once ``stop`` is requested."""
    while handles:
        if stop.requested:
            raise KeyboardInterrupt
        _drain_once(handles, wait_some, result, on_done, what)
        poll()


def _after_stop(handles: dict, wait_some, result, on_done, timeout_s: float) -> None:
    """After a stop: wait (up to ``timeout_s``) for the stopped runs to come back; a result is
    recorded, a cancelled one is not (the sweep then records its run's state from its status)."""
    deadline = time.time() + timeout_s
    while handles and time.time() < deadline:
        for h in wait_some(list(handles)):
            rid = handles.pop(h)
            try:
                res = result(h)
            except Exception:  # noqa: BLE001 - cancelled before it could return
                continue
            on_done(rid, res)


def pool_worker(tasks, results, stop: StopToken, threads: int) -> None:
    """A local pool worker process: runs jobs from ``tasks`` until a ``None``, its stop token is
    requested (the sweep stopped or is gone, or this worker got SIGINT / SIGTERM) or the queue is
    empty; reports ``("start", run id, pid)`` and ``("done", run id, result)`` on ``results``."""
    import queue

    # Ctrl-C at a terminal reaches the whole process group: the sweep relays it through the shared
    # event, so a worker ignores SIGINT (inherited ignored from its start, see LocalPool.run) and
    # stops on the event or on a SIGTERM of its own
    stop.signals = tuple(s for s in stop.signals if s != signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop.installed():
            while not stop.requested:
                try:
                    job = tasks.get(timeout=0.5)
                except queue.Empty:
                    continue
                if job is None:
                    break
                rid, cfg_json, run_dir = job
                results.put(("start", rid, os.getpid()))
                results.put(("done", rid, run_one(cfg_json, run_dir, threads, stop)))
    except KeyboardInterrupt:  # a second Ctrl-C while idle: leave
        pass


@dataclass
class LocalPool:
    """A pool of ``workers`` spawned processes on this machine. Each worker holds a child of the
    sweep's stop token (the sweep's ``multiprocessing`` event, and the sweep's pid: a worker whose
    sweep is gone stops too); a worker that dies mid-run is replaced and its run recorded as failed."""

    workers: int
    threads: int

    def describe(self, jobs: int) -> str:
        return (f"backend local: {min(self.workers, jobs)} worker process(es) at once on this machine, "
                f"{self.threads} torch thread(s) each")  # fmt: skip

    def run(self, jobs: list[Job], on_done: Callable, poll: Callable, stop: StopToken) -> None:
        import multiprocessing as mp
        import queue

        ctx = mp.get_context("spawn")
        stop.share(ctx.Event())
        tasks, results = ctx.Queue(), ctx.Queue()
        n = min(self.workers, len(jobs))
        waiting = list(jobs)  # fed as workers take them: a full pipe never blocks a stop or an exit

        def feed(k: int = 1) -> None:
            for _ in range(k):
                if stop.requested:
                    return
                if waiting:
                    tasks.put(waiting.pop(0))
                    if not waiting:
                        for _ in range(n):
                            tasks.put(None)

        feed(n)

        def start():
            p = ctx.Process(target=pool_worker, args=(tasks, results, stop.child(), self.threads))
            main = threading.current_thread() is threading.main_thread()
            old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # inherited by the worker
            try:
                p.start()
            finally:
                if main:
                    signal.signal(signal.SIGINT, old)
            return p

        procs = [start() for _ in range(n)]
        left = {rid for rid, _, _ in jobs}
        holding: dict[int, str] = {}  # worker pid -> the run it is on
        dead_since: dict[int, float] = {}

        def collect(timeout: float) -> None:
            try:
                kind, rid, payload = results.get(timeout=timeout)
            except queue.Empty:
                return
            if kind == "start":
                holding[payload] = rid
                feed()
            elif rid in left:
                left.discard(rid)
                for pid in [p for p, r in holding.items() if r == rid]:
                    del holding[pid]
                on_done(rid, payload)

        def reap() -> None:
            """A worker killed mid-run (exit code not 0): once nothing more can come from it, its
            run failed; a new worker takes its place."""
            for p in list(procs):
                if p.exitcode in (None, 0) or p.pid not in holding:
                    continue
                if time.time() - dead_since.setdefault(p.pid, time.time()) < 2.0:
                    continue
                rid = holding.pop(p.pid)
                procs.remove(p)
                left.discard(rid)
                on_done(rid, {"status": "failed", "error": f"worker process died (exit code {p.exitcode})"})
                if left and not stop.requested:
                    procs.append(start())

        try:
            while left:
                if stop.requested:
                    raise KeyboardInterrupt
                collect(1.0)
                reap()
                poll()
        except KeyboardInterrupt:  # queued runs never start; running ones checkpoint and stop
            stop.request()
            while any(p.is_alive() for p in procs) or not results.empty():
                collect(0.5)
            raise
        finally:
            if any(p.is_alive() for p in procs):  # normally every worker has left already
                stop.event.set()
            deadline = time.time() + STOP_WAIT_S
            while any(p.is_alive() for p in procs) and time.time() < deadline:
                try:  # a second Ctrl-C: still collect, so that no worker blocks on a full pipe
                    collect(0.2)
                except KeyboardInterrupt:
                    pass
            for p in procs:
                if p.is_alive():  # pragma: no cover - a stuck worker: never leave it behind
                    p.kill()
                p.join()
            tasks.cancel_join_thread()  # what is left in the queue is never waited for


def _ray_run(cfg_json: str, run_dir: str, threads: int) -> dict:
    """One run in a Ray task: checks the run directory is the driver's (shared storage), runs it and
    says where it ran (node id, host, GPUs Ray assigned)."""
    import ray

    ctx = ray.get_runtime_context()
    where = {"node": ctx.get_node_id(), "gpus": [str(g) for g in ray.get_gpu_ids()]}
    first = json.loads(run_dir)[0] if run_dir.startswith("[") else run_dir  # a pack job: its run dirs
    sweep_file = Path(first).parent.parent / SWEEP_FILE
    if not sweep_file.exists():
        return {
            "status": "failed",
            "error": f"{sweep_file} is not visible on node {socket.gethostname()}: the ray backend needs the "
            "sweep directory on a filesystem shared by every node at the same path (docs/scaling.md)",
            **where,
        }
    import ccm_madrl

    return {
        **run_one(cfg_json, run_dir, threads),
        **where,
        "package": str(Path(ccm_madrl.__file__).parent),
    }


@dataclass
class RayTasks:
    """One Ray task per run, on a local Ray instance or the cluster at ``address``. Each task asks
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
        where = f"the cluster at {self.address}" if self.address not in (None, "local") else "a local Ray instance"
        at_once = f"at most {min(self.workers, jobs)} task(s) in flight" if self.workers else "every task submitted at once"
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
        remote = ray.remote(**self.task_options())(_ray_run)
        queue_ = list(jobs)
        refs: dict = {}
        limit = self.workers or len(jobs)

        def submit() -> None:
            while queue_ and len(refs) < limit and not stop.requested:
                rid, cfg_json, run_dir = queue_.pop(0)
                refs[remote.remote(cfg_json, run_dir, self.threads)] = rid

        def wait_some(pending):
            return ray.wait(pending, num_returns=1, timeout=1.0)[0]

        def finished(rid: str, res: dict) -> None:
            on_done(rid, res)
            submit()

        submit()
        try:
            _drain(refs, wait_some, ray.get, finished, poll, stop, "ray task")
        except KeyboardInterrupt:
            # ray.cancel interrupts a running task as a SIGINT would: it flags the run's stop token,
            # the run checkpoints after its episode and ends 'interrupted'; a queued task never starts.
            for ref in refs:
                ray.cancel(ref)
            _after_stop(refs, wait_some, ray.get, on_done, 600.0)
            for ref in refs:
                ray.cancel(ref, force=True)
            raise


@dataclass
class SlurmArray:
    """One SLURM array job per sweep submission (submitit), one array task per run. Re-running the
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
                handles = [ex.submit(run_one, cfg_json, run_dir, self.threads, token) for _, cfg_json, run_dir in batch]
            for h, (rid, _, _) in zip(handles, batch):
                subs[h], job_ids[rid] = rid, h.job_id
            write_json(self.folder / "jobs.json", job_ids)

        def finished(rid: str, res: dict) -> None:
            on_done(rid, res)
            submit(1)  # the local executor: the next job as one ends (a cluster had them all)

        submit(self.at_once(ex.cluster, len(jobs)))

        def wait_some(pending):
            done = [h for h in pending if h.done()]
            if not done:
                time.sleep(1.0)
            return done

        try:
            _drain(subs, wait_some, lambda h: h.result(), finished, poll, stop, "slurm job")
        except KeyboardInterrupt:  # scancel: SLURM sends SIGTERM, each run checkpoints and stops
            for h in list(subs):
                h.cancel(check=False)
            _after_stop(subs, wait_some, lambda h: h.result(), on_done, 120.0)
            raise


# backend name -> factory(plan, address) -> Backend
BACKENDS: dict[str, Callable[[SweepPlan, str | None], Backend]] = {
    "local": lambda plan, address: LocalPool(plan.workers, plan.threads),
    "ray": lambda plan, address: RayTasks(address, plan.threads, plan.workers_given, plan.options),
    "slurm": lambda plan, address: SlurmArray(
        plan.sweep_dir / "slurm", plan.threads, plan.workers_given, plan.options
    ),
}


@dataclass
class SweepResult:
    sweep_dir: Path
    total: int
    done: int  # runs finished as done (this time or before)
    failed: int
    skipped: int  # runs finished before (done or diverged)
    diverged: int = 0  # runs whose training diverged (this time or before): results, not failures
    busy: int = 0  # runs another live process was training (skipped; run the sweep again later)


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
    options: BackendOptions | None = None,
    stop: StopToken | None = None,
    pack: int | None = None,
    extend: bool = False,
) -> SweepResult:
    """Run (or resume) a sweep. ``out`` defaults to ``sweeps/<name>``; see :func:`load_sweep` for
    ``set_``, ``seeds``, ``axes`` and ``name``, :class:`BackendOptions` for ``options``. ``stop``
    (default: a new token, flagged by SIGINT / SIGTERM to this process) is the sweep's stop token:
    once requested every running run checkpoints and ends ``interrupted``, queued runs do not start,
    and KeyboardInterrupt is raised. ``pack``: train compatible runs in packs of at most this many
    (0: chosen from memory and device; ``experiment/pack.py``), one run directory each.

    The sweep directory is locked (``rundir.dir_lock``) for the life of the call: a second sweep
    of it is refused (:class:`SweepDirBusy`). A directory that holds another plan (other run ids or
    another sweep name in its manifest) is refused unless ``extend`` (its runs are then added to
    the manifest; the previous ``sweep.yaml`` is kept as ``sweep.<k>.yaml``)."""
    spec, base = load_sweep(path, set_, seeds, axes, name)
    options = check_options(backend, with_file_slurm(spec, options))
    runs = expand(spec, base, str(path))
    planned = [r.id for r in runs]
    if only is not None:
        keep = set(only)
        runs = [r for r in runs if r.id in keep]
    sweep_dir = Path(out) if out else inside("sweeps", spec.name)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(f"sweep directory {sweep_dir}: exists and is not a directory")
    sd = SweepDir(sweep_dir)
    sd.check_safe()  # a received sweep directory: no link for a write to follow
    check_plan(sd, spec.name, planned, extend)  # before anything is created
    from .memory import check_memory

    for r in runs:  # an impossible size is refused before the sweep directory exists
        check_memory(r.config, pack or 1)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with dir_lock(sweep_dir, "sweep directory", SweepDirBusy, SWEEP_BUSY_HINT):
        check_plan(sd, spec.name, planned, extend)  # again, now that no other sweep can write it
        return _run_sweep(spec, base, runs, sd, backend, workers, address, progress, options, stop, pack, extend)


def with_file_slurm(spec: SweepSpec, options: BackendOptions | None) -> BackendOptions:
    """The options with the sweep file's ``slurm:`` block under those given on the command line."""
    options = options or BackendOptions()
    if spec.slurm:
        given = {k: v for k, v in vars(options.slurm).items() if v != getattr(SlurmOptions(), k)}
        options = replace(options, slurm=SlurmOptions(**{**spec.slurm, **given}))
    return options


class SweepDirBusy(ValueError):
    """Another live process runs a sweep in this directory."""


SWEEP_BUSY_HINT = "; wait for that sweep to end or stop it (Ctrl-C / SIGTERM), then run again to resume"


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


def _run_sweep(spec, base, runs, sd, backend, workers, address, progress, options, stop, pack, extend):
    sweep_dir = sd.path
    sd.runs_dir.mkdir(parents=True, exist_ok=True)
    resolved = spec.model_dump()
    resolved["base"] = base
    text = yaml.safe_dump(resolved, sort_keys=False)
    if extend and sd.sweep_file.exists() and sd.sweep_file.read_text() != text:
        k = 1 + sum(1 for _ in sweep_dir.glob("sweep.*.yaml"))
        sd.write_file(f"sweep.{k}.yaml", sd.sweep_file.read_bytes())  # the plan it extends
    sd.write_file(SWEEP_FILE, text)
    plan = plan_sweep(runs, sweep_dir, backend, workers, options)
    man = Manifest(sweep_dir)
    for r in runs:
        man.update(
            r.id,
            overrides=r.overrides,
            run_dir=str(sd.run(r.id).path.relative_to(sweep_dir)),
            episodes=r.config.training.episodes,
        )
        if r.id in plan.done:
            state, eps = plan.done[r.id]
            man.update(r.id, status=state, episodes_done=eps)
        elif r.id in plan.busy:  # another sweep process trains it now: its entry stays as that one wrote it
            continue
        else:
            man.update(r.id, status="pending", error=None, traceback=None)
    man.save(spec.name)
    jobs, skipped = plan.jobs, len(plan.done)
    counts = {"done": 0, "failed": 0, "interrupted": 0, "diverged": 0}
    for state, _ in plan.done.values():
        counts[state] += 1
    total_eps = sum(r.config.training.episodes for r in runs)

    def episodes_now() -> int:
        return sum(int(sd.run(r.id).status().get("episodes_done", 0)) for r in runs)

    bar = _SweepProgress(progress, spec.name, len(runs), skipped, total_eps, episodes_now())
    runner = BACKENDS[backend](plan, address)

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
        if res["status"] == "queued":  # stopped before it started
            return
        counts[res["status"]] += 1
        man.update(rid, **res)
        man.save(spec.name)
        bar.run_finished(res["status"])

    def poll() -> None:
        bar.episodes(episodes_now())

    stop = stop or StopToken()
    try:
        with bar, stop.installed():
            if jobs:
                for rid, _, _ in jobs:
                    man.update(rid, status="queued")
                man.save(spec.name)
                if progress:  # what runs where, and how many at once
                    print(f"{spec.name}: {runner.describe(len(backend_jobs))}", flush=True)
                runner.run(backend_jobs, on_done, poll, stop)
            poll()
    except KeyboardInterrupt:  # record where each unfinished run stopped, then stop
        for rid, _, run_dir in jobs:
            st = RunDir(run_dir).status()
            if man.entries[rid].get("status") != "queued":
                continue
            if st.get("state") in ("interrupted", "running"):
                man.update(rid, status="interrupted", episodes_done=st.get("episodes_done"))
            else:  # never started: to run on the next call
                man.update(rid, status="pending")
        man.save(spec.name)
        raise
    return SweepResult(
        sweep_dir, len(runs), counts["done"], counts["failed"], skipped, counts["diverged"], len(plan.busy)
    )


SWEEP_LINES_EVERY_S = 60.0  # a plain progress line this often where stdout is not a terminal


def _duration(seconds: float) -> str:
    """1h05m, 4m10s, 12s."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s % 60:02d}s" if m else f"{s}s")


class _SweepProgress:
    """One progress display for the whole sweep: runs finished and episodes done over all runs. On
    a terminal a rich bar; elsewhere (a log file, nohup, CI) a plain line at the start, at every
    finished run, every :data:`SWEEP_LINES_EVERY_S` seconds and at the end, flushed at once;
    nothing when disabled (``--no-progress``)."""

    def __init__(self, enabled: bool, name: str, runs: int, skipped: int, total_eps: int, eps_done: int,
                 every_s: float = SWEEP_LINES_EVERY_S, stream=None):  # fmt: skip
        self.name, self.runs, self.finished, self.total_eps = name, runs, skipped, total_eps
        self.failed = self.diverged = 0
        self.eps0 = self.eps = eps_done
        self.every_s, self.stream = every_s, stream or sys.stdout
        self.t0 = self.last = time.perf_counter()
        self.mode = None if not enabled else ("bar" if self.stream.isatty() else "lines")
        self.prog = None
        if self.mode == "bar":
            from .._progress import progress_bar

            self.prog = progress_bar()
            self.t_runs = self.prog.add_task(f"{name}: runs", total=runs, completed=skipped)
            self.t_eps = self.prog.add_task("episodes", total=total_eps, completed=eps_done)

    def __enter__(self):
        if self.prog:
            self.prog.__enter__()
        elif self.mode == "lines":
            self._line("start")
        return self

    def __exit__(self, *exc):
        if self.prog:
            self.prog.__exit__(*exc)
        elif self.mode == "lines":
            self._line("stopped" if exc[0] else "end")

    def _notes(self) -> list[str]:
        return [f"{n} {what}" for n, what in ((self.failed, "failed"), (self.diverged, "diverged")) if n]

    def _line(self, what: str) -> None:
        self.last = time.perf_counter()
        rate = (self.eps - self.eps0) / max(self.last - self.t0, 1e-9)
        eta = _duration((self.total_eps - self.eps) / rate) if rate > 0 else "-"
        notes = "".join(f", {x}" for x in self._notes())
        print(
            f"{self.name} [{what}]: runs {self.finished}/{self.runs} finished{notes}; episodes "
            f"{self.eps}/{self.total_eps} ({self.eps / max(self.total_eps, 1):.0%}), {rate:.2f}/s, "
            f"{_duration(self.last - self.t0)} elapsed, ETA {eta}",
            file=self.stream,
            flush=True,
        )

    def run_finished(self, status: str) -> None:
        self.failed += status == "failed"
        self.diverged += status == "diverged"
        self.finished += status in ("done", "diverged")
        if self.prog:
            self.prog.advance(self.t_runs)
            notes = ", ".join(self._notes())
            self.prog.update(self.t_runs, description=f"{self.name}: runs" + (f" ({notes})" if notes else ""))
        elif self.mode == "lines":
            self._line(f"a run {status}")

    def episodes(self, n: int) -> None:
        self.eps = n
        if self.prog:
            self.prog.update(self.t_eps, completed=n)
        elif self.mode == "lines" and time.perf_counter() - self.last >= self.every_s:
            self._line("progress")
