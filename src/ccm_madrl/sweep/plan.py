"""The plan of a sweep: a sweep file (a base config, axes and seeds) expanded into runs with stable
ids (:func:`expand`), and which of them to run, with how many workers and threads
(:func:`plan_sweep`)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ..config.agent import RESOLVE
from ..experiment.config import (
    COMMAND_LINE,
    ConfigError,
    ExperimentConfig,
    Label,
    _format_validation_error,
    apply_overrides,
    load_yaml,
    override_keys,
    parse_value,
    split_override,
)
from ..rundir import SweepDir
from .backends import check_options
from .control import usable_cores
from .jobs import RunJob
from .options import BackendOptions, SlurmOptions

BUSY_GRACE_S = 5.0  # how long a sweep's plan waits for a run's claim by an exiting process to end


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Label = Field(..., description="the sweep's label: its directory is sweeps/<name>")
    base: dict | str = Field(default_factory=dict, description="base config: inline mapping or YAML path")
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] | int = Field(default_factory=lambda: [0])
    description: str = ""
    slurm: dict[str, Any] = Field(default_factory=dict, description="SlurmOptions fields (backend slurm)")
    # the dotted keys the command line set (load_sweep): their errors name the command line
    _cli_keys: list[str] = PrivateAttr(default_factory=list)

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
    fields of the base config (``training.episodes=300``, ``+KEY=V``, ``~KEY``: the forms of
    ``config.experiment.split_override``); ``seeds`` replaces the seeds (``3`` or ``[0, 5]``); each
    of ``axes`` replaces or adds an axis (``agent.actor_lr=[1e-4, 0.1]``); ``name`` renames the
    sweep. The keys the command line set are kept on the spec (``cli_keys``): an error in one of
    their values names the command line, not the file."""
    path = Path(path)
    data = load_yaml(path)
    cli: list[str] = []
    for item in axes:
        key, sep, text = item.partition("=")
        vals = parse_value(text)
        if not sep or not key.strip() or not isinstance(vals, list):
            raise ConfigError(f"--axis {item!r} on {COMMAND_LINE}: expected KEY=[v1, v2, ...]")
        data.setdefault("axes", {})[key.strip()] = vals
        cli.append(key.strip())
    if seeds is not None:
        data["seeds"] = parse_value(seeds)
        cli.append("seed")
    if name:
        data["name"] = name
    set_, swept = _axis_overrides(data, list(set_), str(path))
    cli += swept
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        spec_cli = ["seeds"] * ("seed" in cli) + ["axes"] * bool(set(cli) - {"seed"}) + ["name"] * bool(name)
        raise ConfigError(_format_validation_error(err, str(path), spec_cli)) from None
    base, base_source = spec.base, str(path)
    if isinstance(base, str):
        base_path = (path.parent / base).resolve()
        base, base_source = load_yaml(base_path), str(base_path)
    base = apply_overrides(base, set_, base_source)
    spec._cli_keys = [*cli, *override_keys(set_)]
    return spec, base


def _axis_overrides(data: dict, set_: list[str], source: str) -> tuple[list[str], list[str]]:
    """Hydra's rule for an override of a key the sweep varies: ``--set KEY=V`` (or a bare ``KEY=V``)
    where ``KEY`` is an axis replaces the axis by ``[V]``, and ``seed=V`` replaces the seeds by
    ``[V]`` (a base value would be overwritten by the axis: silently ignored); ``~KEY`` removes the
    axis (its runs take the base config's value); ``+KEY=V`` of an axis is refused (the file sets
    it). Returns the other overrides, for the base config, and the axis keys changed."""
    axes = data.get("axes") if isinstance(data.get("axes"), dict) else {}
    rest, swept = [], []
    for item in set_:
        op, key, text = split_override(item)
        if key not in axes and key != "seed":
            rest.append(item)
            continue
        if op == "+":
            raise ConfigError(
                f"override {item!r} on {COMMAND_LINE}: {key} is already set in {source} "
                f"({'its seeds' if key == 'seed' else 'an axis'}; change it with {key}=...)"
            )
        if op == "~" and key == "seed":
            raise ConfigError(
                f"override {item!r} on {COMMAND_LINE}: the seeds cannot be removed; set them with seed=V"
            )
        if op == "~":
            axes.pop(key)
        elif key == "seed":
            data["seeds"] = [parse_value(text)]
        else:
            axes[key] = [parse_value(text)]
        swept.append(key)
    return rest, swept


def _with_overrides(base: dict, ov: dict[str, Any]) -> dict:
    """A copy of ``base`` with each dotted key of ``ov`` set (an axis' value, the seed)."""
    data = apply_overrides(base, [])
    for k, v in ov.items():
        node = data
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"sweep axis {k!r}: {p!r} is not a config section")
        node[parts[-1]] = v
    return data


def expand(spec: SweepSpec, base: dict, source: str = "") -> list[RunSpec]:
    """The runs of a sweep, in a stable order (axes as written, then seeds). Each value is checked
    by building the full config (a part or learner named 'module:attribute' is imported here, as
    it is where the run trains); errors name the axis and value."""
    keys = list(spec.axes)
    runs: list[RunSpec] = []
    seen: dict[str, dict] = {}
    for values in itertools.product(*(spec.axes[k] for k in keys)):
        for seed in spec.seed_list():
            ov = {**dict(zip(keys, values)), "seed": seed}
            data = _with_overrides(base, ov)
            data.setdefault("name", spec.name)
            try:
                cfg = ExperimentConfig.model_validate(data, context=RESOLVE)  # the user's sweep file
            except ValidationError as err:
                raise ConfigError(
                    _format_validation_error(err, source or spec.name, spec._cli_keys, f"(run {ov})").replace(
                        "invalid configuration", "invalid sweep value"
                    )
                ) from None
            rid = cfg.id()
            if rid in seen:
                raise ConfigError(f"sweep {spec.name}: runs {seen[rid]} and {ov} resolve to the same config")
            seen[rid] = ov
            runs.append(RunSpec(rid, ov, cfg))
    return runs


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep will do, computed without side effects (:func:`plan_sweep`)."""

    done: dict[str, tuple[str, int]]  # finished runs (skipped): run id -> (end state, episodes done)
    jobs: list[RunJob]  # the runs to (re)start or resume, in order
    workers: int
    threads: int  # torch threads per worker (the runs' own config sets their threads)
    options: BackendOptions = field(default_factory=BackendOptions)
    sweep_dir: Path | None = None  # absolute
    workers_given: int | None = None  # --workers as given (ray: tasks in flight; slurm: array tasks at once)
    # runs another live process trains now (skipped): run id -> who
    busy: dict[str, str] = field(default_factory=dict)


def _job(sd: SweepDir, r: RunSpec) -> RunJob:
    return RunJob(r.id, r.config.model_dump(mode="json"), str(sd.run(r.id).path))


def plan_sweep(
    runs: list[RunSpec],
    sweep_dir: Path,
    backend: str,
    workers: int | None,
    options: BackendOptions | None = None,
) -> SweepPlan:
    """Which runs are done, which to run, and with how many workers and threads. Run directories
    are resolved to absolute paths here, on the driver: a Ray task or a SLURM job writes exactly
    there whatever its node and working directory."""
    options = check_options(backend, options)
    sd, done, busy, jobs, claimed = SweepDir(Path(sweep_dir).resolve()), {}, {}, [], []
    for r in runs:
        rd = sd.run(r.id)
        finished = rd.finished_state(r.id)
        if finished:
            done[r.id] = (finished, rd.status().get("episodes_done"))
        elif rd.trained_elsewhere():
            claimed.append(r)
        else:
            jobs.append(_job(sd, r))
    # a process killed a moment ago may still be exiting: its claim ends within the grace period
    deadline = time.monotonic() + BUSY_GRACE_S
    while claimed and time.monotonic() < deadline and any(sd.run(r.id).trained_elsewhere() for r in claimed):
        time.sleep(0.2)
    for r in claimed:
        if who := sd.run(r.id).trained_elsewhere():
            busy[r.id] = who
        else:
            jobs.append(_job(sd, r))
    cores = usable_cores()
    n = max(1, min(workers or cores, len(jobs) or 1))
    threads = max(1, cores // n) if backend == "local" else max(1, int(options.cpus_per_run or 1))
    return SweepPlan(done, jobs, n, threads, options, sd.path, workers, busy)
