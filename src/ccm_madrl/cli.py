"""``ccm-madrl``: one entry point for training, sweeps, reports, parity checks and benchmarks."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

QUICK_DEFAULT = ["training.episodes=100", "training.eval_episodes=50", "name=quickstart"]


def _console():
    """Rich's console, never wrapping a line itself: off a terminal (a log file, a pipe) a line stays
    one line at any length (a run path is not split at column 80); on one, the terminal wraps."""
    from rich.console import Console

    return Console(soft_wrap=True)


class UsageError(ValueError):
    """Bad input on the command line (a path, a value): one line, exit 2."""


def need_file(path: str | Path, what: str) -> Path:
    """``path`` must be an existing file (not a directory)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {p}: no such file")
    if p.is_dir():
        raise UsageError(f"{what} {p}: is a directory, expected a file")
    return p


def need_dir_or_new(path: str | Path | None, what: str) -> None:
    """An output directory: absent (it will be created) or a directory, never an existing file."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {p}: exists and is not a directory")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"{what} {p}: {parent} is not a directory")


def _no_stray_arguments(args: argparse.Namespace) -> None:
    """Bare KEY=VALUE arguments were turned into --set by :func:`hydra_style`; what is left is not one."""
    config = getattr(args, "config", None)
    stray = [config] if config and "=" in config and not Path(config).exists() else []
    for tok in stray + list(args.overrides or []):
        raise UsageError(f"{tok!r}: expected KEY=VALUE with a dotted key, e.g. agent.actor_lr=0.01")


def cmd_train(args: argparse.Namespace) -> int:
    from .experiment.config import load_config
    from .experiment.runner import train

    _no_stray_arguments(args)
    overrides = list(args.set or [])
    if args.config is not None:
        need_file(args.config, "config")
    need_dir_or_new(args.run_dir, "--run-dir")
    if args.config is None and not overrides:
        overrides = QUICK_DEFAULT
    if args.cfg == "job":  # Hydra's --cfg job: the resolved config, nothing run
        print(load_config(args.config, overrides).to_yaml(), end="")
        return 0
    if overrides is QUICK_DEFAULT:
        _console().print(
            "[dim]no config given: running the short default (100 episodes, 50 evaluation episodes, published "
            "hyper-parameters); see `ccm-madrl train --help`[/dim]"
        )
    cfg = load_config(args.config, overrides)
    from .rundir import inside

    run_dir = Path(args.run_dir) if args.run_dir else inside("runs", f"{cfg.name}-{cfg.id()}")
    try:
        summary = train(cfg, run_dir, progress=not args.no_progress)
    except KeyboardInterrupt:
        _console().print(
            f"[yellow]interrupted; checkpoint kept in {run_dir} — re-run the same command to resume[/yellow]"
        )
        return 130
    from .experiment.cross import FINAL_EVALS
    from .rundir import FINAL_EPISODES, RunDir

    if summary.state == "diverged":
        error = RunDir(run_dir).status().get("error", "")
        print(f"ccm-madrl train: {error}; the run is kept in {run_dir} (state diverged)", file=sys.stderr)
        return 1
    last = FINAL_EVALS if cfg.kind == "cross" else FINAL_EPISODES
    _console().print(
        f"[green]{summary.state}[/green]: {summary.episodes_done} episodes, final return "
        f"(mean of last {last} evaluations) {summary.final_return:.2f} -> {summary.run_dir}"
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import SweepOptions, expand, load_sweep, run_sweep

    _no_stray_arguments(args)
    changes = {"set_": args.set or [], "seeds": args.seeds, "axes": args.axis or [], "name": args.name}
    need_file(args.file, "sweep file")
    need_dir_or_new(args.out, "--out")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers: must be >= 1 (got {args.workers})")
    options = _backend_options(args)
    if args.pack is not None and args.pack < 0:
        raise UsageError(f"--pack: must be >= 1 runs per pack, or given without a number (got {args.pack})")
    if args.cfg == "job":
        print(_sweep_cfg(args.file, changes), end="")
        return 0
    if args.dry_run:
        from .sweep import run_states

        spec, base = load_sweep(args.file, **changes)
        runs = expand(spec, base, args.file)
        from .rundir import inside

        states = run_states(Path(args.out) if args.out else inside("sweeps", spec.name), [r.id for r in runs])
        for r in runs:
            print(r.id, states[r.id], " ".join(f"{k}={v}" for k, v in r.overrides.items()))
        counts = Counter(states[r.id] for r in runs)
        print(f"{len(runs)} runs: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        return 0
    try:
        opts = SweepOptions(
            out=args.out,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            progress=not args.no_progress,
            backend_options=options,
            pack=args.pack,
            extend=args.extend,
            **changes,
        )
        res = run_sweep(args.file, opts=opts)
    except KeyboardInterrupt:
        _console().print(
            "[yellow]sweep interrupted; finished runs are kept and running ones checkpointed — re-run to resume[/yellow]"
        )
        return 130
    _console().print(
        f"sweep {res.sweep_dir}: {res.done}/{res.total} runs done"
        + (f", {res.diverged} diverged" if res.diverged else "")
        + f" ({res.skipped} already finished), {res.failed} failed"
        + (f", {res.busy} trained by another process now (skipped: run again later)" if res.busy else "")
        + (" — see manifest.json for tracebacks" if res.failed else "")
    )
    return 0 if res.failed == 0 else 1


def _sweep_cfg(path: str, changes: dict) -> str:
    """``sweep --cfg job``: the resolved sweep as YAML (name, seeds, axes as the runs take them, and
    the base config with every default filled in), each run's config checked as a run would be."""
    import yaml

    from .experiment.config import build_config
    from .sweep import expand, load_sweep

    spec, base = load_sweep(path, **changes)
    expand(spec, base, path)  # every run's config, checked (errors name the file or the command line)
    resolved = build_config({**base, "name": base.get("name", spec.name)}, source=path)
    doc = {"name": spec.name, "seeds": spec.seed_list(), "axes": spec.axes}
    doc["base"] = resolved.model_dump(mode="json")
    return yaml.safe_dump(doc, sort_keys=False)


def _backend_options(args: argparse.Namespace):
    """``--cpus-per-run``, ``--gpus-per-run``, ``--ship-package``, ``--max-retries`` and the
    ``--slurm-*`` options as :class:`BackendOptions` (only what was given)."""
    from .experiment.config import parse_value
    from .sweep import BackendOptions, SlurmOptions

    slurm = {
        "partition": args.slurm_partition,
        "time_min": args.slurm_time,
        "mem_gb": args.slurm_mem,
        "account": args.slurm_account,
        "qos": args.slurm_qos,
        "constraint": args.slurm_constraint,
        "cluster": args.slurm_cluster,
    }
    if args.slurm_time is not None and args.slurm_time < 1:
        raise UsageError(f"--slurm-time: minutes, must be >= 1 (got {args.slurm_time})")
    extra = {}
    for item in args.slurm_opt or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm-opt {item!r}: expected KEY=VALUE (an sbatch option without --)")
        extra[key.strip()] = parse_value(value)
    if args.max_retries < 0:
        raise UsageError(f"--max-retries: must be >= 0 (got {args.max_retries})")
    return BackendOptions(
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        ship_package=args.ship_package,
        max_retries=args.max_retries,
        slurm=SlurmOptions(**{k: v for k, v in slurm.items() if v is not None}, additional=extra),
    )


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    need_dir_or_new(args.out, "--out")
    res = build_report(
        args.dirs,
        args.out,
        command=" ".join(["ccm-madrl report", *args.dirs, *(["--out", args.out] if args.out else [])]),
        progress=lambda line: print(
            line, file=sys.stderr, flush=True
        ),  # stages on stderr, the result on stdout
    )
    _console().print(
        f"report: {res.out_dir / 'report.md'} and {res.out_dir / 'report.html'} — {len(res.figures)} figures, "
        f"{len(res.tables['table1'])} table-1 rows"
        + (
            f", {len(res.excluded_runs)} run(s) excluded (not finished, or diverged)"
            if res.excluded_runs is not None and len(res.excluded_runs)
            else ""
        )
    )
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from .archive import archive_sweep

    need_dir_or_new(args.out, "--out")
    if not Path(args.sweep).is_dir():
        raise UsageError(f"SWEEP_DIR {args.sweep}: no such directory")
    res = archive_sweep(
        args.sweep,
        args.out,
        baselines=not args.no_baselines,
        command=" ".join(
            ["ccm-madrl archive", args.sweep, "--out", args.out]
            + (["--include-complete-failed"] if args.include_complete_failed else [])
            + (["--include-interrupted"] if args.include_interrupted else [])
            + (["--merge"] if args.merge else [])
        ),
        include_complete_failed=args.include_complete_failed,
        include_interrupted=args.include_interrupted,
        merge=args.merge,
    )
    _console().print(
        f"archive: {args.out} — {len(res['added'])} run(s) added, {res['archived']} archived, "
        f"{res['finished']} of {res['runs_in_sweep']} {'finished or interrupted' if args.include_interrupted else 'finished'} "
        f"in {args.sweep}; "
        f"{sum(res['bytes'].values()) / 1024:.0f} KiB ({res['bytes_per_run'] / 1024:.0f} KiB per run)"
    )
    return 0


def _times(margin: float) -> str:
    """A check's margin (error / tolerance) as printed: "0.031x"; "-" for an exact check."""
    if margin != margin:
        return "-"
    return "inf" if margin == float("inf") else f"{margin:.2g}x"


def cmd_parity(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .parity import check_file, check_tolerance

    console = _console()
    ok = True
    rtol = check_tolerance(args.rtol, "--rtol")  # a finite number > 0, else one line naming the flag
    atol = check_tolerance(args.atol, "--atol")
    for path in args.files:
        need_file(path, "golden file")
    for path in args.files:
        rep = check_file(path, rtol=rtol, atol=atol)
        table = Table(title=f"{rep.path} ({rep.kind} file)")
        for col in ("quantity", "max abs err", "max rel err", "tolerance", "margin", "result", "note"):
            table.add_column(col)
        for c in rep.checks:
            table.add_row(
                c.quantity,
                "-" if c.max_abs != c.max_abs else f"{c.max_abs:.3g}",
                "-" if c.max_rel != c.max_rel else f"{c.max_rel:.3g}",
                "exact" if c.tolerance is None else str(c.tolerance),
                _times(c.margin),
                "[green]PASS[/green]" if c.passed else "[red]FAIL[/red]",
                c.note,
            )
        console.print(table)
        console.print(rep.tolerance_summary(), markup=False, highlight=False)
        console.print(("[green]PASS[/green]" if rep.passed else "[red]FAIL[/red]") + f" {rep.path}")
        ok &= rep.passed
    return 0 if ok else 1


# `bench` option (its dest) -> the benchmark option it sets (bench/options.py)
BENCH_FIELDS = {
    "pack": "packs",
    "steps": "steps",
    "update": "updates",
    "episodes": "episodes",
    "monitor": "monitor",
    "published": "published",
    "published_episodes": "published_episodes",
    "lr": "lrs",
    "eval_every": "eval_every",
    "device": "device",
}


def bench_options(args: argparse.Namespace) -> tuple[str, dict]:
    """The benchmark a ``bench`` command line runs (``pack`` for ``agent --pack``) and the options
    given on it, checked by the benchmark's options model (``bench.options.OPTIONS``); an option the
    benchmark does not take, or a value out of its range, is a UsageError naming the flag."""
    from pydantic import ValidationError

    from .bench import OPTIONS

    which = "pack" if args.which == "agent" and args.pack else args.which
    given = {f: getattr(args, dest) for dest, f in BENCH_FIELDS.items() if getattr(args, dest) is not None}
    if which == "pack":  # one monitor setting and one episode length per call
        given["monitors"] = (bool(given.pop("monitor", False)),)
        if len(given.get("steps", [0])) != 1:
            raise UsageError("--steps: agent --pack trains at one episode length (one value)")
        given["steps"] = given["steps"][0] if "steps" in given else None
        given = {k: v for k, v in given.items() if v is not None}
    flag = {f: "--" + dest.replace("_", "-") for dest, f in BENCH_FIELDS.items()} | {"monitors": "--monitor"}
    model = OPTIONS[which]
    for f in given:
        if f not in model.model_fields:
            raise UsageError(
                f"{flag[f]}: not an option of bench {args.which}" + (" --pack" if which == "pack" else "")
            )
    try:
        model(**given)
    except ValidationError as err:
        e = err.errors()[0]
        f = str(e["loc"][0])
        raise UsageError(f"{flag.get(f, f)}: {e['msg']} ({model.model_fields[f].description})") from None
    return which, {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}


def cmd_bench(args: argparse.Namespace) -> int:
    from . import jsonio
    from .bench import OPTIONS, run

    need_dir_or_new(args.out, "--out")
    which, kw = bench_options(args)
    name = None
    if which == "pack":
        from .provenance import resolve_device

        kw["device"] = str(resolve_device(kw.get("device", OPTIONS["pack"]().device)))
        name = f"pack_{'_'.join(map(str, kw['packs']))}" + ("_monitor" if kw["monitors"][0] else "")
        if kw["device"] != "cpu":
            name += f"_{kw['device'].replace(':', '')}"
    res = run(which, args.out, name=name, **kw)
    print(jsonio.dumps(res))
    return 0


# KEY=VALUE, +KEY=VALUE, ++KEY=VALUE, ~KEY, ~KEY=VALUE (config.experiment.split_override)
_OVERRIDE = re.compile(r"^(\+\+|\+)?[A-Za-z_][A-Za-z0-9_.]*=|^~[A-Za-z_][A-Za-z0-9_.]*(=|$)")
# Hydra's sweeps of the basic sweeper: range(start, stop[, step]) and choice(a, b, ...)
_SWEEP_FUNCTION = re.compile(r"^\s*(range|choice)\((.*)\)\s*$", re.S)
_MULTIRUN = ("-m", "--multirun")
# options of `train` and `sweep` that take no value (every other option takes the next argument)
_NO_VALUE = {
    "-h",
    "--help",
    "--no-progress",
    "--dry-run",
    "--extend",
    "--ship-package",
    "--no-ship-package",
    *_MULTIRUN,
}


def _split_top_level(text: str) -> list[str]:
    """``a,b`` -> ``['a', 'b']``; commas inside brackets, braces or quotes do not split."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur]


def _range(key: str, args: list[str]) -> list:
    """``range(start, stop[, step])`` as Hydra's basic sweeper expands it: integers when every
    argument is one, else decimal steps (``range(0, 1, 0.25)`` is 0, 0.25, 0.5, 0.75), stop excluded."""
    from decimal import Decimal, InvalidOperation

    from .config.experiment import parse_value

    values = [parse_value(a) for a in args]
    if len(values) not in (2, 3) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise UsageError(f"{key}=range({', '.join(args)}): expected range(start, stop[, step]) of numbers")
    if len(values) == 2:
        values.append(1)
    if values[2] == 0:
        raise UsageError(f"{key}=range({', '.join(args)}): the step must not be 0")
    if all(isinstance(v, int) for v in values):
        out = list(range(*values))
    else:
        try:
            start, stop, step = (Decimal(a.strip()) for a in [*args, "1"][:3])
        except InvalidOperation:
            start, stop, step = (Decimal(repr(float(v))) for v in values)
        n = max(0, int(-((start - stop) // step)))  # ceil((stop - start) / step)
        out = [float(start + i * step) for i in range(n)]
    if not out:
        raise UsageError(f"{key}=range({', '.join(args)}): an empty range")
    return [str(v) for v in out]


def _sweep_values(key: str, value: str, multirun: bool) -> list[str]:
    """The values of ``KEY=VALUE`` on a command line: ``a,b`` (with -m), ``choice(a, b)`` and
    ``range(...)`` are several (a sweep: -m required), anything else one."""
    m = _SWEEP_FUNCTION.match(value)
    if m and not multirun:
        raise UsageError(
            f"{key}={value}: {m.group(1)}() is a sweep; run it with `ccm-madrl sweep FILE -m {key}={value}`"
        )
    if m and m.group(1) == "range":
        return _range(key, [a.strip() for a in _split_top_level(m.group(2))])
    if m:
        values = [v.strip() for v in _split_top_level(m.group(2))]
    else:
        values = [v.strip() for v in _split_top_level(value)] if multirun else [value]
    if not all(values):
        raise UsageError(f"{key}: empty value in the multirun list {value!r}")
    return values


def hydra_style(argv: list[str]) -> list[str]:
    """Hydra's command-line habits for ``train`` and ``sweep``: a bare ``KEY=VALUE`` (and
    ``+KEY=VALUE``, ``++KEY=VALUE``, ``~KEY``) is ``--set ...``; with ``-m`` / ``--multirun``
    (sweep only), ``KEY=a,b``, ``KEY=choice(a, b)`` and ``KEY=range(start, stop[, step])`` are
    ``--axis KEY=[a, b]`` (on ``seed``: ``--seeds [a, b]``)."""
    if not argv or argv[0] not in ("train", "sweep"):
        return argv
    multirun = any(a in _MULTIRUN for a in argv[1:])
    if multirun and argv[0] == "train":
        raise UsageError(
            "-m/--multirun: train runs one config; for several, put it in a sweep file as `base:` and run "
            "`ccm-madrl sweep FILE -m KEY=a,b`"
        )
    out, takes_value = [argv[0]], False
    for a in argv[1:]:
        if takes_value:
            out.append(a)
            takes_value = False
        elif a in _MULTIRUN:
            continue
        elif a == "--":
            out.append(a)
        elif a.startswith("-"):
            out.append(a)
            takes_value = "=" not in a and a not in _NO_VALUE
        elif _OVERRIDE.match(a):
            key, _, value = a.partition("=")
            values = [value] if key[:1] == "~" else _sweep_values(key, value, multirun)
            key = key.lstrip("+")  # a sweep over a key the file lacks adds its axis
            if len(values) == 1:
                out += ["--set", a if values[0] == value else f"{a[: a.index('=')]}={values[0]}"]
            elif key == "seed":
                out += ["--seeds", f"[{', '.join(values)}]"]
            else:
                out += ["--axis", f"{key}=[{', '.join(values)}]"]
        else:
            out.append(a)
    return out


class Choices(Sequence):
    """The allowed values of an option, read from a registry when first needed (checking a value,
    printing the help): the registries live on the training side, which a command line that never
    uses the option does not load."""

    def __init__(self, load: Callable[[], Iterable[str]]):
        self._load, self._values = load, None

    def _all(self) -> list[str]:
        if self._values is None:
            self._values = list(self._load())
        return self._values

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())


class BackendChoices(Choices):
    """The registered backends; any 'module:attribute' passes too (the sweep imports and checks it,
    one line naming it where it cannot)."""

    def __contains__(self, value) -> bool:
        from .config.imports import is_import_path

        return is_import_path(value) or value in self._all()


def _backends() -> list[str]:
    from .sweep import BACKENDS

    return list(BACKENDS)


def _update_orders() -> list[str]:
    from .agents.parts import UPDATE_SCHEDULES

    return list(UPDATE_SCHEDULES)


def _overrides(p: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE`` and bare ``KEY=VALUE`` arguments (the same)."""
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help=f"override a {what} field, e.g. {_EXAMPLE[what]}"
    )
    p.add_argument(
        "overrides", nargs="*", default=[], metavar="KEY=VALUE", help="bare overrides: the same as --set"
    )


_EXAMPLE = {"config": "agent.actor_lr=0.1", "base-config": "training.episodes=300"}
_NO_PROGRESS = "no progress bar (the final summary line is still printed)"
_CFG_JOB = (
    "Hydra's --cfg job: print the resolved config (YAML, every default filled in) and exit without running"
)


def _train_parser(sub) -> None:
    t = sub.add_parser(
        "train",
        help="run one experiment (resumes if its run directory has a checkpoint)",
        description="Train one experiment. A run directory that holds a checkpoint (an interrupted run: "
        "Ctrl-C, a lost machine) is resumed where it stopped, bit-identically: re-run the same command. "
        "A finished run is not trained again.",
    )
    t.add_argument(
        "config",
        nargs="?",
        help="experiment YAML (omit for the short default: " + " ".join(QUICK_DEFAULT) + ")",
    )
    _overrides(t, "config")
    t.add_argument(
        "--run-dir",
        help="output directory (default: runs/<name>-<config id>); resumed if it holds a checkpoint",
    )
    t.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS)
    t.add_argument("--cfg", choices=["job"], help=_CFG_JOB)
    t.set_defaults(func=cmd_train)


def _sweep_backend_options(s: argparse.ArgumentParser) -> None:
    """Where and how a sweep's runs are trained (docs/scaling.md)."""
    s.add_argument(
        "--backend",
        choices=BackendChoices(_backends),
        default="local",
        metavar="NAME",
        help="%(choices)s (default %(default)s): a local process pool, Ray tasks or a SLURM array job "
        "(submitit), or your own as 'module:attribute'; docs/scaling.md",
    )
    s.add_argument(
        "--workers",
        type=int,
        help="local: parallel runs (default: the usable CPU cores); each run uses its config's `threads` torch threads (default 1); ray: at most this many tasks at once (default: as resources allow); slurm: array tasks at once",
    )
    s.add_argument("--address", help="ray: cluster address (default: start a local Ray instance)")
    s.add_argument("--cpus-per-run", type=float, help="ray/slurm: CPUs each run asks for (default 1)")
    s.add_argument(
        "--gpus-per-run",
        type=float,
        help="ray/slurm: GPUs each run asks for (ray: a fraction shares a GPU; default 0); `device: auto` then runs on the GPU assigned",
    )
    s.add_argument(
        "--ship-package",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ray: send this package to every node (runtime_env py_modules); default: on with --address",
    )
    s.add_argument(
        "--max-retries",
        type=int,
        default=3,
        help="ray: times a task lost with its node runs again (it resumes; default %(default)s)",
    )
    s.add_argument("--slurm-partition", help="slurm: partition")
    s.add_argument("--slurm-time", type=int, help="slurm: time limit per array task, minutes (default 1440)")
    s.add_argument("--slurm-mem", type=float, help="slurm: memory per array task, GB")
    s.add_argument("--slurm-account", help="slurm: account")
    s.add_argument("--slurm-qos", help="slurm: quality of service")
    s.add_argument("--slurm-constraint", help="slurm: node constraint")
    s.add_argument(
        "--slurm-cluster",
        choices=["slurm", "local"],
        help="slurm: where the array runs (default slurm: sbatch must be on the PATH; local: submitit's local executor, at most --workers processes at once)",
    )
    s.add_argument(
        "--slurm-opt",
        action="append",
        metavar="KEY=VALUE",
        help="slurm: any other sbatch option, e.g. gres=gpu:1",
    )


def _sweep_parser(sub) -> None:
    s = sub.add_parser(
        "sweep",
        help="run (or resume) a sweep of experiments: local processes, Ray or a SLURM array",
        description="Run a sweep file's runs (base config x axes x seeds). Finished runs are skipped and "
        "interrupted ones resumed: re-run the same command to continue a sweep.",
    )
    s.add_argument(
        "file", metavar="FILE", help="sweep YAML (base config + axes + seeds), e.g. configs/smoke.yaml"
    )
    s.add_argument("--out", help="sweep directory (default: sweeps/<name>)")
    _sweep_backend_options(s)
    _overrides(s, "base-config")
    s.add_argument("--seeds", help="replace the seeds: a count (3) or a list ([0, 5])")
    s.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="Hydra style: bare KEY=a,b arguments become axes (--axis KEY=[a, b]; seed=0,1 sets --seeds)",
    )
    s.add_argument(
        "--axis",
        action="append",
        metavar="KEY=[V1,...]",
        help="replace or add an axis, e.g. agent.critic_lr=[1e-3]",
    )
    s.add_argument("--name", help="rename the sweep (default output: sweeps/<name>)")
    s.add_argument("--dry-run", action="store_true", help="list the runs (id, state and overrides) and exit")
    s.add_argument(
        "--pack",
        type=int,
        nargs="?",
        const=0,
        metavar="R",
        help="train compatible runs (same options but seed and per-run scalars) as packs of at most R runs, one program each (no R: at most 16 on a CPU, 160 on a GPU, within half the free memory)",
    )
    s.add_argument(
        "--extend",
        action="store_true",
        help="add this plan's runs to a sweep directory that holds another plan (refused without it)",
    )
    s.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS)
    s.add_argument("--cfg", choices=["job"], help=_CFG_JOB)
    s.set_defaults(func=cmd_sweep)


def _report_parsers(sub) -> None:
    r = sub.add_parser(
        "report",
        help="tables and figures (Markdown, HTML, CSV, PNG/PDF) from sweep, run or archive directories",
    )
    r.add_argument(
        "dirs",
        nargs="+",
        help="sweep, run or archive (results/<sweep>, `ccm-madrl archive`) directories; several: compared side by side",
    )
    r.add_argument("--out", help="output directory (default: reports/<names>)")
    r.set_defaults(func=cmd_report)

    a = sub.add_parser(
        "archive", help="compact a sweep's finished runs into a committable archive (results/<sweep>/)"
    )
    a.add_argument("sweep", help="sweep directory (read only)")
    a.add_argument("--out", required=True, help="archive directory (created or extended)")
    a.add_argument("--no-baselines", action="store_true", help="skip the non-learning baselines' runs")
    a.add_argument(
        "--include-complete-failed",
        action="store_true",
        help="also archive runs marked failed after their last episode (all episodes recorded), with a note",
    )
    a.add_argument(
        "--include-interrupted",
        action="store_true",
        help="a prefix archive: also archive runs stopped before their last episode, with the episodes they finished (their stop events are the prefix's); never mixed with an archive of finished runs",
    )
    a.add_argument(
        "--merge",
        action="store_true",
        help="add the runs of another sweep (another name or base config) to this archive; without it that is refused (runs of the same sweep, e.g. another seed slice, need no flag)",
    )
    a.set_defaults(func=cmd_archive)


def _parity_parser(sub) -> None:
    q = sub.add_parser("parity", help="replay golden file(s) of the published implementation and compare")
    q.add_argument(
        "files", nargs="+", help="golden file(s): .npz (env or agent) or .json (trajectory: whole episodes)"
    )
    q.add_argument(
        "--rtol",
        metavar="X",
        help="replace every relative tolerance (rewards 1e-9, gradients and priority errors 1e-4, trajectory returns 1e-6) by X for this call, e.g. on a new machine; exact checks stay exact",
    )
    q.add_argument(
        "--atol",
        metavar="X",
        help="replace the absolute tolerances (actions, weights after the step: 1e-6) by X; weight elements with a ~0 gradient keep their bound of 2.5 x lr where it is looser",
    )
    q.set_defaults(func=cmd_parity)


def _shown(value) -> str:
    """A benchmark option's default as the help prints it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return str(value)


def _bench_help(field: str, *which: str, extra: str = "") -> str:
    """The help of a ``bench`` option: the benchmark option's description, each benchmark's default
    and its minimum where it has one (``bench/options.py``)."""
    from .bench import OPTIONS

    name = {"pack": "agent --pack"}
    fields = {w: OPTIONS[w].model_fields[field] for w in which}
    per = []
    for w, f in fields.items():
        least = [m.ge for m in f.metadata if getattr(m, "ge", None) is not None]
        per.append(f"{name.get(w, w)} {_shown(f.default)}" + (f", at least {least[0]}" if least else ""))
    text = fields[which[0]].description
    return f"{' / '.join(name.get(w, w) for w in which)}: {text}{extra} (default: {'; '.join(per)})"


def _bench_parser(sub) -> None:
    from .bench import BENCHMARKS
    from .bench.options import DEVICES

    b = sub.add_parser(
        "bench",
        help="speed measurements (results as JSON)",
        description="Speed measurements (bench/), written as JSON with the machine's description; benchmarks/ keeps the recorded ones.",
    )
    b.add_argument(
        "which",
        choices=[w for w in BENCHMARKS if w != "pack"],
        help="env: batched step; agent: training episodes (--pack R: packs of R runs); monitor: its overhead; argmax: the actor loss's row skipping over real runs per actor learning rate",
    )
    b.add_argument("--out", default=None, help="directory to write <which>.json into (default: print only)")
    b.add_argument("--episodes", type=int, help=_bench_help("episodes", "agent", "pack", "monitor", "argmax"))
    b.add_argument("--steps", type=int, nargs="+", help=_bench_help("steps", "agent", "pack"))
    b.add_argument(
        "--update",
        nargs="+",
        choices=Choices(_update_orders),
        metavar="ORDER",
        help=_bench_help("updates", "agent", "pack", "monitor", extra=": %(choices)s"),
    )
    b.add_argument(
        "--monitor",
        action="store_true",
        default=None,
        help=_bench_help("monitor", "agent", extra="; agent --pack: the same"),
    )
    b.add_argument(
        "--pack",
        type=int,
        nargs="+",
        metavar="R",
        help=_bench_help("packs", "pack", extra="; trained as one program, ms per run-episode"),
    )
    b.add_argument("--published", nargs="+", metavar="PATH", help=_bench_help("published", "agent", "pack"))
    b.add_argument("--published-episodes", type=int, help=_bench_help("published_episodes", "agent", "pack"))
    b.add_argument("--lr", type=float, nargs="+", help=_bench_help("lrs", "argmax"))
    b.add_argument("--eval-every", type=int, help=_bench_help("eval_every", "argmax"))
    b.add_argument(
        "--device",
        choices=DEVICES,
        help=_bench_help(
            "device", "pack", extra="; a device other than the CPU is added to the results file's name"
        ),
    )
    b.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ccm-madrl", description=__doc__)
    p.add_argument("--version", action="version", version=f"ccm_madrl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_train_parser, _sweep_parser, _report_parsers, _parity_parser, _bench_parser):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Expected errors (bad input: a config value, a path, a file's content) print one line naming
    the field or path and exit 2; an unexpected one prints one line saying where its traceback was
    written and exits 1."""
    import warnings

    warnings.formatwarning = lambda msg, *a, **k: f"warning: {msg}\n"  # one line, no source excerpt
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = hydra_style(argv)
    except UsageError as err:
        print(f"ccm-madrl {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        print(f"ccm-madrl {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug: keep the traceback, say where
        with tempfile.NamedTemporaryFile(
            "w", prefix=f"ccm-madrl-{args.command}-", suffix=".log", delete=False
        ) as f:
            f.write(f"ccm-madrl {' '.join(sys.argv[1:] if argv is None else argv)}\n")
            f.write(traceback.format_exc())
        msg = " ".join(str(err).split())[:200]
        print(
            f"ccm-madrl {args.command}: unexpected error ({type(err).__name__}: {msg}); "
            f"full traceback in {f.name}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
