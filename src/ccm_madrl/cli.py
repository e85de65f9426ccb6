"""``ccm-madrl``: one entry point for training, sweeps, reports, parity checks and benchmarks."""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from pathlib import Path

QUICK_DEFAULT = ["training.episodes=100", "training.eval_episodes=50", "name=quickstart"]


def _console():
    from rich.console import Console

    return Console()


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


def cmd_train(args: argparse.Namespace) -> int:
    from .experiment.config import load_config
    from .experiment.runner import train

    overrides = list(args.set or [])
    if args.config is not None:
        need_file(args.config, "config")
    need_dir_or_new(args.run_dir, "--run-dir")
    if args.config is None and not overrides:
        overrides = QUICK_DEFAULT
        _console().print(
            "[dim]no config given: running the short default (100 episodes, 50 evaluation episodes, published "
            "hyper-parameters); see `ccm-madrl train --help`[/dim]"
        )
    cfg = load_config(args.config, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / f"{cfg.name}-{cfg.id()}"
    try:
        summary = train(cfg, run_dir, progress=not args.no_progress)
    except KeyboardInterrupt:
        _console().print(
            f"[yellow]interrupted; checkpoint kept in {run_dir} — re-run the same command to resume[/yellow]"
        )
        return 130
    from .experiment.cross import FINAL_EVALS
    from .rundir import FINAL_EPISODES

    last = FINAL_EVALS if cfg.kind == "cross" else FINAL_EPISODES
    _console().print(
        f"[green]{summary.state}[/green]: {summary.episodes_done} episodes, final return "
        f"(mean of last {last} evaluations) {summary.final_return:.2f} -> {summary.run_dir}"
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiment.sweep import expand, load_sweep, run_sweep

    changes = {"set_": args.set or [], "seeds": args.seeds, "axes": args.axis or [], "name": args.name}
    need_file(args.file, "sweep file")
    need_dir_or_new(args.out, "--out")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers: must be >= 1 (got {args.workers})")
    if args.dry_run:
        from .experiment.sweep import run_states

        spec, base = load_sweep(args.file, **changes)
        runs = expand(spec, base, args.file)
        states = run_states(Path(args.out) if args.out else Path("sweeps") / spec.name, [r.id for r in runs])
        for r in runs:
            print(r.id, states[r.id], " ".join(f"{k}={v}" for k, v in r.overrides.items()))
        print(f"{len(runs)} runs")
        return 0
    try:
        res = run_sweep(
            args.file,
            args.out,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            progress=not args.no_progress,
            **changes,
        )
    except KeyboardInterrupt:
        _console().print(
            "[yellow]sweep interrupted; finished runs are kept and running ones checkpointed — re-run to resume[/yellow]"
        )
        return 130
    _console().print(
        f"sweep {res.sweep_dir}: {res.done}/{res.total} runs done ({res.skipped} already finished), {res.failed} failed"
        + (" — see manifest.json for tracebacks" if res.failed else "")
    )
    return 0 if res.failed == 0 else 1


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    need_dir_or_new(args.out, "--out")
    res = build_report(
        args.dirs,
        args.out,
        command=" ".join(["ccm-madrl report", *args.dirs, *(["--out", args.out] if args.out else [])]),
    )
    _console().print(
        f"report: {res.out_dir / 'report.md'} and {res.out_dir / 'report.html'} — {len(res.figures)} figures, "
        f"{len(res.tables['table1'])} table-1 rows"
        + (
            f", {len(res.excluded_runs)} unfinished run(s) excluded"
            if res.excluded_runs is not None and len(res.excluded_runs)
            else ""
        )
    )
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .parity import check_file

    console = _console()
    ok = True
    for path in args.files:
        need_file(path, "golden file")
    for path in args.files:
        rep = check_file(path)
        table = Table(title=f"{rep.path} ({rep.kind} file)")
        for col in ("quantity", "max abs err", "max rel err", "result", "note"):
            table.add_column(col)
        for c in rep.checks:
            table.add_row(
                c.quantity,
                "-" if c.max_abs != c.max_abs else f"{c.max_abs:.3g}",
                "-" if c.max_rel != c.max_rel else f"{c.max_rel:.3g}",
                "[green]PASS[/green]" if c.passed else "[red]FAIL[/red]",
                c.note,
            )
        console.print(table)
        console.print(("[green]PASS[/green]" if rep.passed else "[red]FAIL[/red]") + f" {rep.path}")
        ok &= rep.passed
    return 0 if ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from . import jsonio
    from .bench import run

    need_dir_or_new(args.out, "--out")
    kw = {}
    if args.which == "agent":
        kw = {"episodes": args.episodes, "monitor": args.monitor}
        if args.steps:
            kw["steps"] = tuple(args.steps)
        if args.update:
            kw["updates"] = tuple(args.update)
        if args.published:
            kw["published"] = tuple(args.published)
            kw["published_episodes"] = args.published_episodes
    elif args.which == "argmax":
        kw = {"episodes": args.episodes, "eval_every": args.eval_every}
        if args.lr:
            kw["lrs"] = tuple(args.lr)
    elif args.which == "monitor":
        kw = {"episodes": args.episodes}
        if args.update:
            kw["updates"] = tuple(args.update)
    res = run(args.which, args.out, **kw)
    print(jsonio.dumps(res))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ccm-madrl", description=__doc__)
    p.add_argument("--version", action="version", version=f"ccm_madrl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run one experiment (resumes if its run directory has a checkpoint)")
    t.add_argument("config", nargs="?", help="experiment YAML (omit for the short default)")
    t.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. agent.actor_lr=0.1"
    )
    t.add_argument("--run-dir", help="output directory (default: runs/<name>-<config id>)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sweep", help="run (or resume) a sweep of experiments locally or on Ray")
    s.add_argument("file", help="sweep YAML (base config + axes + seeds)")
    s.add_argument("--out", help="sweep directory (default: sweeps/<name>)")
    s.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local process pool (default) or Ray tasks",
    )
    s.add_argument(
        "--workers",
        type=int,
        help="local: parallel runs (default: the usable CPU cores); each run uses its config's `threads` "
        "torch threads (default 1)",
    )
    s.add_argument("--address", help="ray: cluster address (default: start a local Ray instance)")
    s.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a base-config field, e.g. training.episodes=300",
    )
    s.add_argument("--seeds", help="replace the seeds: a count (3) or a list ([0, 5])")
    s.add_argument(
        "--axis",
        action="append",
        metavar="KEY=[V1,...]",
        help="replace or add an axis, e.g. agent.critic_lr=[1e-3]",
    )
    s.add_argument("--name", help="rename the sweep (default output: sweeps/<name>)")
    s.add_argument("--dry-run", action="store_true", help="list the runs (id and overrides) and exit")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser(
        "report", help="tables and figures (Markdown, HTML, CSV, PNG/PDF) from sweep or run directories"
    )
    r.add_argument("dirs", nargs="+", help="sweep or run directories (several: compared side by side)")
    r.add_argument("--out", help="output directory (default: reports/<names>)")
    r.set_defaults(func=cmd_report)

    q = sub.add_parser("parity", help="replay golden file(s) of the published implementation and compare")
    q.add_argument(
        "files", nargs="+", help="golden file(s): .npz (env or agent) or .json (trajectory: whole episodes)"
    )
    q.set_defaults(func=cmd_parity)

    b = sub.add_parser("bench", help="speed measurements (results as JSON)")
    b.add_argument(
        "which",
        choices=["env", "agent", "monitor", "argmax"],
        help="env: batched step; agent: training episodes; monitor: its overhead; argmax: the actor loss's "
        "row skipping over real runs per actor learning rate",
    )
    b.add_argument("--out", default=None, help="directory to write <which>.json into")
    b.add_argument(
        "--episodes",
        type=int,
        default=30,
        help="agent: episodes per measured run; argmax: episodes per learning rate",
    )
    b.add_argument(
        "--steps", type=int, nargs="*", help="agent: steps per episode to measure (default 10 100)"
    )
    b.add_argument("--update", nargs="*", choices=["simultaneous", "sequential"], help="agent: update orders")
    b.add_argument("--monitor", action="store_true", help="agent: with the gradient-flow monitor on")
    b.add_argument(
        "--published",
        nargs="+",
        metavar="PATH",
        help="agent: local checkout(s) of the published repository (TesfayZ/CCM_MADRL_MEC), timed in the same "
        "run; skipped with a message where absent",
    )
    b.add_argument(
        "--published-episodes", type=int, default=3, help="agent: published episodes to time (after a first)"
    )
    b.add_argument(
        "--lr", type=float, nargs="+", help="argmax: actor learning rates (default 1e-4 1e-3 1e-2 1e-1)"
    )
    b.add_argument("--eval-every", type=int, default=25, help="argmax: evaluate every k-th episode")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Expected errors (bad input: a config value, a path, a file's content) print one line naming
    the field or path and exit 2; an unexpected one prints one line saying where its traceback was
    written and exits 1."""
    import warnings

    warnings.formatwarning = lambda msg, *a, **k: f"warning: {msg}\n"  # one line, no source excerpt
    parser = build_parser()
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
