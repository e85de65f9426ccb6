"""The archive: a sweep's finished runs, compacted to a few Parquet tables small enough to commit.

``ccm-madrl archive SWEEP_DIR --out results/<sweep>/`` reads the finished runs (``status.json``
says done, or diverged: ``rundir.FINISHED_STATES``; a diverged run with its episodes before the
divergence) of a sweep directory and writes, for the whole sweep, one file per table
(``docs/run_store.md``, "The archive")::

    archive.json             format, sweep name, source, runs archived / finished / started /
                             planned (the manifest's), how and when (provenance)
    runs.parquet             one row per run: the store's run table (config fields, provenance,
                             final return, untrained return, run-level stop events)
    configs.parquet          one row per run: resolved config (YAML), provenance, learner
                             description and status (JSON text)
    metrics.parquet          one row per (run, episode): every metrics column
    monitor_summary.parquet  one row per (run, measured episode, role): aggregates over agents
    stops.parquet            one row per (run, role, agent): stop events
    baselines.parquet        one row per (baseline, seed): the non-learning baselines' final
                             return on the same environment and evaluation episodes

Re-running is idempotent: runs already archived are kept as they are, newly finished ones are
added (nothing is rewritten when there are none and no baseline is missing).

An archive is written as a transaction (:func:`_swap_in`): every table and ``archive.json`` (last)
go to a new folder beside it, which then replaces the archive in one ``rename`` (Linux: an atomic
exchange, ``renameat2(RENAME_EXCHANGE)``); a process killed on the way leaves the archive as it
was, and the next run completes what is missing (a baseline of any archived run included). Adding
the runs of another sweep (another name, or runs whose config differs outside the sweep's axes and
seed) is refused unless ``merge``; a sweep without a finished run writes no archive. :class:`ArchiveStore` (and
``ccm_madrl.store.load`` on an archive directory) gives the same tables as the live store, so
``ccm-madrl report results/<sweep>`` rebuilds every table and figure from the archive alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import __version__
from .rundir import (
    FINISHED_STATES,
    SWEEP_FILE,
    RunDir,
    SweepDir,
    UnsafePath,
    atomic_write,
    links_in,
    read_json,
    read_parquet,
    write_json,
)
from .store import INDEX, RUN_TABLES, ArchiveStore, concat_tables, is_archive  # noqa: F401 - read side

FORMAT = 1
BASELINES = ("all_local", "random_selection")  # compared with in the statistics (report/stats.py)
BASELINE_EPISODES = 101  # 100 evaluations (the first episode has none): the final-return window
# metrics columns kept exactly (float64: a return must compare exactly with the all-local
# -35.0295...); every other float is rounded to MANTISSA_BITS significant bits (relative error
# <= 2**-13 = 1.2e-4) and stored as float32 (gradient norms: float64, for their range)
EXACT = {"eval_return", "eval_return_std", "train_return"}
MANTISSA_BITS = 12
# metrics columns rebuilt on load from monitor_summary (``monitor.compact.metrics_from_summary``)
# and the config, so not stored twice
DERIVED_METRICS = ("actors_changed", "actor_max_abs_change", "actor_grad_norm", "actor_sat_exact_frac",
                   "actor_out_gt09_frac", "actor_z_absmax", "actor_frac_flowing", "actor_frac_saturated",
                   "actor_frac_dead", "actor_frac_no_path", "critic_changed", "critic_max_abs_change",
                   "critic_grad_norm", "grad_ratio", "effective_actor_lr", "effective_critic_lr")  # fmt: skip


def round_mantissa(x: np.ndarray, bits: int = MANTISSA_BITS) -> np.ndarray:
    """Floats rounded (to nearest) to ``bits`` significant mantissa bits; zeros, NaN and infinities
    unchanged, and a non-zero value never becomes zero."""
    x = np.asarray(x)
    itype, total = (np.uint32, 23) if x.dtype == np.float32 else (np.uint64, 52)
    drop = total - bits
    if drop <= 0:
        return x
    u = x.view(itype)
    r = ((u + itype(1 << (drop - 1))) & ~itype((1 << drop) - 1)).astype(itype).view(x.dtype)
    # non-finite values, and subnormals that would round to zero, stay as they are
    return np.where(np.isfinite(x) & ((r != 0) | (x == 0)), r, x)


def _compact(df: pd.DataFrame) -> pd.DataFrame:
    """The archive's storage types: floats rounded (:func:`round_mantissa`) and float32, except
    :data:`EXACT` columns and gradient norms (float64, rounded: they span 1e-45..1e4, and a tiny
    norm must not become an exact 0); ints as int32."""
    out = df.copy()
    for c in out.columns:
        col = out[c]
        if c in EXACT or c == "run_id":
            continue
        if col.dtype == np.float64:
            if c.startswith(("grad_norm", "actor_grad_norm", "critic_grad_norm", "grad_ratio")):
                out[c] = round_mantissa(col.to_numpy())
            else:
                out[c] = round_mantissa(col.to_numpy().astype("float32"))
        elif col.dtype == np.float32:
            out[c] = round_mantissa(col.to_numpy())
        elif col.dtype == np.int64 and (len(col) == 0 or col.abs().max() < 2**31):
            out[c] = col.astype("int32")
        elif col.dtype == object and c == "critic_changed":  # True / False / None
            out[c] = col.astype("boolean")
    return out


def write_table(path: Path, df: pd.DataFrame) -> None:
    """Parquet, atomically: zstd, byte-stream-split encoding for float columns (noisy floats
    compress ~30% better), dictionary encoding for the others; without the pandas and Arrow schema
    copies in the footer (~15 KB for a wide table; the Parquet types suffice here)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    floats = [f.name for f in t.schema if pa.types.is_floating(f.type)]
    others = [f.name for f in t.schema if f.name not in floats]

    def write(file) -> None:
        pq.write_table(t, file, compression="zstd", compression_level=9, use_byte_stream_split=floats or False,
                       use_dictionary=others, store_schema=False)  # fmt: skip

    atomic_write(path, write, path.parent)


def _baseline_key(cfg: dict) -> dict:
    """What a baseline's return depends on: the environment, the RNG setting, the evaluation
    episodes and the seed."""
    return {
        "rng_mode": cfg.get("rng_mode"),
        "env_seed": cfg.get("env_seed"),
        "seed": cfg.get("seed"),
        "env": cfg.get("env"),
        "eval_episodes": cfg.get("training", {}).get("eval_episodes"),
    }


def baseline_return(key: dict, algorithm: str) -> dict:
    """Run the non-learning ``algorithm`` for :data:`BASELINE_EPISODES` episodes on the setting
    ``key`` (:func:`_baseline_key`) and return its final and untrained return."""
    from .experiment.config import build_config
    from .experiment.runner import Trainer
    from .store import untrained_return

    cfg = build_config(
        {
            "rng_mode": key["rng_mode"],
            "env_seed": key["env_seed"],
            "seed": key["seed"],
            "env": key["env"],
            "agent": {"algorithm": algorithm},
            "training": {
                "episodes": BASELINE_EPISODES,
                "eval_episodes": key["eval_episodes"],
                "tensorboard": False,
                "checkpoint_every": BASELINE_EPISODES,
            },  # fmt: skip
            "monitor": {"enabled": False},
        }
    )
    with tempfile.TemporaryDirectory(prefix="ccm-madrl-baseline-") as d:
        res = Trainer(cfg, d, progress=False, quiet=True).run()
        m = RunDir(d).metrics()
    return {
        "baseline": algorithm,
        "seed": key["seed"],
        "final_return": float(res.final_return),
        "untrained_return": untrained_return(m),
        "episodes": BASELINE_EPISODES,
        "setting": json.dumps(key, sort_keys=True),
    }


def complete_but_failed(runs: pd.DataFrame, store) -> pd.Series:
    """Runs whose status is ``failed`` although every episode was trained and recorded (the failure
    came after the last episode, e.g. while writing the run's summary): their metrics and monitor
    rows are complete."""
    if runs.empty:
        return pd.Series(dtype=bool)
    planned = runs["cfg.training.episodes"] if "cfg.training.episodes" in runs else runs["episodes_done"] + 1
    complete = (runs["status"] == "failed") & (runs["episodes_done"] >= planned)
    for i in runs.index[complete]:
        m = RunDir(runs.at[i, "run_dir"]).metrics(["episode"])
        complete[i] = len(m) >= planned[i]
    return complete


def archive_sweep(
    sweep_dir: str | Path,
    out: str | Path,
    baselines: bool = True,
    command: str | None = None,
    include_complete_failed: bool = False,
    include_interrupted: bool = False,
    merge: bool = False,
) -> dict:
    """Archive the finished runs of ``sweep_dir`` into ``out`` (module docstring); with
    ``include_complete_failed`` also the runs of :func:`complete_but_failed`, archived with status
    ``done`` and ``archive_note`` naming the failure (their original status is kept in
    ``configs.status_json``). With ``include_interrupted`` also the runs stopped before their last
    episode, with the episodes they finished and status ``interrupted`` (a prefix archive: its stop
    events are those of the prefix, ``archive.json`` says ``includes_interrupted``; the report counts
    such runs as unfinished). An archive holds either kind, never both. Returns
    {"added": [...run ids], "archived": n, "finished": n, "runs_in_sweep": n, "bytes": {...}}."""

    sweep_dir, out = Path(sweep_dir), Path(out)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"archive: no such sweep directory: {sweep_dir}")
    links = ([out] if out.is_symlink() else []) + (links_in(out) if out.is_dir() else []) + links_in(sweep_dir)
    if links:  # a received archive or sweep: no write may follow a link, no read be led out of it
        raise UnsafePath(
            f"{links[0]}: is a symbolic link; refused (an archive or sweep directory must hold no links)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(out.parent):  # one archive writer per folder at a time (the next one waits)
        _recover(out)
        return _archive(sweep_dir, out, baselines, command, include_complete_failed, include_interrupted, merge)


def _check_kind(out: Path, index: dict, include_interrupted: bool) -> None:
    """An archive holds finished runs or a prefix (interrupted runs too), never both."""
    if index and bool(index.get("includes_interrupted", False)) != include_interrupted:
        raise ValueError(
            f"archive: {out} holds only finished runs; archive interrupted runs into an archive of their own"
            if include_interrupted
            else f"archive: {out} is a prefix archive (includes interrupted runs); archive finished runs elsewhere"
        )


def _with_notes(store, include_complete_failed: bool) -> pd.DataFrame:
    """The store's run table with ``archive_note``: with ``include_complete_failed``, the runs of
    :func:`complete_but_failed` become ``done`` with a note naming their failure."""
    runs = store.runs.copy()
    runs["archive_note"] = ""
    if include_complete_failed:
        late = complete_but_failed(runs, store)
        for i in runs.index[late]:
            err = (RunDir(runs.at[i, "run_dir"]).status().get("error") or "").strip().splitlines()
            runs.at[i, "archive_note"] = "failed after its last episode: " + (
                err[-1] if err else "no error recorded"
            )
            runs.at[i, "status"] = "done"
    return runs


def _new_tables(store, old: dict, new: pd.DataFrame) -> dict[str, list[pd.DataFrame]]:
    """The archive's run tables: the old ones and the rows of the ``new`` runs."""
    dirs = {rd.name: rd for _, rd in store.run_dirs}
    tables: dict[str, list[pd.DataFrame]] = {t: [old[t]] if len(old[t]) else [] for t in RUN_TABLES}
    # a run's directory relative to its sweep (runs/<id>), never a path of the machine it ran on
    tables["runs"].append(
        new.drop(columns=["heartbeat"]).assign(run_dir=[portable_run_dir(d) for d in new["run_dir"]])
    )
    for run_id in new["run_id"]:
        rd = dirs[run_id]
        run = RunDir(rd)
        cfg = store.config(rd)
        tables["configs"].append(
            pd.DataFrame(
                [
                    {
                        "run_id": run_id,
                        "config_yaml": yaml.safe_dump(cfg, sort_keys=False),
                        "provenance_json": json.dumps(run.provenance()),
                        "learner_json": json.dumps(run.learner()),
                        "status_json": json.dumps(run.status()),
                    }
                ]
            )  # fmt: skip
        )
        summary = store._summary_of(rd, None)
        m = run.metrics()
        if len(summary):
            tables["monitor_summary"].append(_compact(summary).assign(run_id=run_id))
            m = m.drop(columns=[c for c in DERIVED_METRICS if c in m])
        tables["metrics"].append(_compact(m).assign(run_id=run_id))
        stops = store._stops_of(rd)
        if len(stops):
            tables["stops"].append(stops.assign(run_id=run_id))
    return tables


def _write_tables(stage: Path, out: Path, tables: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Into the new folder: what the archive holds besides its tables, and every table, sorted;
    returns the configs table."""
    for p in out.iterdir() if out.is_dir() else []:
        if p.name != INDEX and p.suffix != ".parquet":
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, stage / p.name)
    configs = pd.DataFrame()
    for name, frames in tables.items():
        if not frames:
            continue
        df = pd.concat(frames, ignore_index=True)
        if name == "configs":
            configs = df
        keys = [k for k in ("run_id", "role", "episode", "agent") if k in df]
        df = df.sort_values(keys, kind="stable").reset_index(drop=True)
        df = df[["run_id", *[c for c in df.columns if c != "run_id"]]]
        write_table(stage / f"{name}.parquet", df)
    return configs


def _archive(sweep_dir, out, baselines, command, include_complete_failed, include_interrupted, merge) -> dict:
    from .store import Store

    old = {t: read_parquet(out / f"{t}.parquet") for t in (*RUN_TABLES, "baselines")}
    have = set(old["runs"]["run_id"]) if len(old["runs"]) else set()
    index = read_json(out / INDEX)
    _check_kind(out, index, include_interrupted)
    store = Store([sweep_dir])
    runs = _with_notes(store, include_complete_failed)
    done = runs[runs["status"].isin(FINISHED_STATES + (("interrupted",) if include_interrupted else ()))]
    new = done[~done["run_id"].isin(have)]
    if done.empty and not index:
        raise ValueError(
            f"archive: {sweep_dir} has no finished run ({len(runs)} runs, none done or diverged); nothing written"
        )
    sweep_name = store.sweep_names[0] if store.sweep_names else sweep_dir.name
    axes = sweep_axes(sweep_dir)
    if index and not merge:
        check_same_sweep(out, index, old["configs"], sweep_dir, sweep_name, axes, [store.config(r) for r in (
            {rd.name: rd for _, rd in store.run_dirs}[rid] for rid in new["run_id"])])  # fmt: skip
    want_baselines = baselines and bool(_missing_baselines(old["baselines"], _archived_configs(old["configs"])))
    if new.empty and index and not want_baselines:
        return _result(out, [], len(have), len(done), len(runs))
    tables = _new_tables(store, old, new)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
    try:
        configs = _write_tables(stage, out, tables)
        if baselines:  # every archived run's setting: one a killed run left out is added now
            _add_baselines(stage, old["baselines"], _archived_configs(configs))
        elif len(old["baselines"]):
            shutil.copy2(out / "baselines.parquet", stage / "baselines.parquet")
        _write_index(stage, out, index, sweep_dir, sweep_name, axes, merge, store, runs, have, new, done, configs,
                     include_interrupted, command)  # fmt: skip
        _swap_in(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return _result(out, sorted(new["run_id"]), len(have) + len(new), len(done), len(runs))


def _write_index(stage, out, index, sweep_dir, sweep_name, axes, merge, store, runs, have, new, done, configs,
                 include_interrupted, command) -> None:  # fmt: skip
    """archive.json, written last into the new folder: what it holds and how it was made."""
    name = index.get("sweep", sweep_name) if index else sweep_name
    merged = sorted({*index.get("merged_sweeps", []), *([sweep_name] if sweep_name != name else [])})
    entry = {
        "format": FORMAT,
        "sweep": name,
        **({"merged_sweeps": merged} if merged else {}),
        "axes": sorted({*index.get("axes", []), *axes}),
        "source": portable_path(sweep_dir),
        "runs_archived": len(have) + len(new),
        "finished_in_source": len(done),
        "runs_in_source": len(runs),
        "runs_planned": len(SweepDir(sweep_dir).manifest().get("runs", [])) or len(runs),
        "includes_interrupted": include_interrupted,
        "complete_but_failed": sorted(
            {*index.get("complete_but_failed", []), *new.loc[new["archive_note"] != "", "run_id"]}
        ),
        "runs_provenance": runs_provenance(configs),
        "archived_with": {"version": __version__, **_commit()},
        "updated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": portable_command(command or f"ccm-madrl archive {sweep_dir} --out {out}", sweep_dir, out),
        "history": history_once(
            index.get("history", []),
            sorted(new["run_id"]),
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ),
    }
    write_json(stage / INDEX, entry)


def _writer_lock(folder: Path):
    """An exclusive ``flock`` on the archive's parent folder (no file created), waited for."""
    from contextlib import contextmanager

    @contextmanager
    def held():
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    return held()


def _old_name(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def _recover(out: Path) -> None:
    """Undo what a killed writer left: its unfinished new folders (``.<name>.new-*``) are removed;
    an archive moved aside (``.<name>.old``, the two-rename fallback of :func:`_swap_in`) but not
    replaced is put back."""
    for p in out.parent.glob(f".{out.name}.new-*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
    old = _old_name(out)
    if old.is_dir() and not old.is_symlink():
        if out.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, out)


def _swap_in(stage: Path, out: Path) -> None:
    """Replace the archive ``out`` by the folder ``stage`` (both in one folder) in one step: the
    directories are exchanged atomically (``renameat2(RENAME_EXCHANGE)``, Linux) and the old one
    (now at ``stage``) is removed by the caller; elsewhere, or on a file system without it, ``out``
    is renamed aside (``.<name>.old``) first, and :func:`_recover` puts it back if a crash falls
    between the two renames."""
    if not out.exists():
        os.rename(stage, out)
        return
    if _exchange(stage, out):
        return
    old = _old_name(out)
    os.rename(out, old)
    os.rename(stage, out)
    shutil.rmtree(old)


def _exchange(a: Path, b: Path) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def sweep_axes(sweep_dir: Path) -> list[str]:
    """The keys a sweep varies (its ``sweep.yaml``'s axes; none when it has no readable one)."""
    from .experiment.config import parse_yaml

    try:
        spec = parse_yaml((Path(sweep_dir) / SWEEP_FILE).read_text(), str(Path(sweep_dir) / SWEEP_FILE))
    except (OSError, ValueError, yaml.YAMLError):
        return []
    axes = spec.get("axes") if isinstance(spec, dict) else None
    return sorted(axes) if isinstance(axes, dict) else []


def config_shape(cfg: dict, axes: Iterable[str]) -> str:
    """What runs of one sweep share: the config id without its name, seed and the axes' keys (each
    at its default), so that configs written by other versions of the package compare equal."""
    from .experiment.config import stored_config

    d = json.loads(json.dumps(cfg))
    d.pop("seed", None)
    d.pop("name", None)
    for key in axes:
        *section, field = key.split(".")
        node = d
        for part in section:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(field, None)
    return stored_config(d).id()


def check_same_sweep(out: Path, index: dict, configs: pd.DataFrame, sweep_dir: Path, sweep_name: str,
                     axes: list[str], new_cfgs: list[dict]) -> None:  # fmt: skip
    """Refuse (ValueError) adding the runs of ``sweep_dir`` to the archive ``out`` when they are
    another sweep's: another name, or a config that differs from every archived run's outside the
    axes (the archive's and this sweep's) and the seed. ``--merge`` adds them anyway."""
    name = index.get("sweep")
    if name is not None and name != sweep_name:
        raise ValueError(
            f"archive: {out} holds sweep {name!r}, {sweep_dir} is sweep {sweep_name!r}; refused (pass --merge "
            "to add its runs to this archive, or give another --out)"
        )
    if not new_cfgs or configs.empty:
        return
    keys = sorted({*index.get("axes", []), *axes})
    have = {config_shape(c, keys) for c in _archived_configs(configs)}
    other = [c for c in new_cfgs if config_shape(c, keys) not in have]
    if other:
        raise ValueError(
            f"archive: {out} holds sweep {name!r} with another base config than {len(other)} of the runs of "
            f"{sweep_dir} (they differ outside the axes {', '.join(keys) or '(none)'} and the seed); refused "
            "(pass --merge to add them to this archive, or give another --out)"
        )


def _archived_configs(configs: pd.DataFrame) -> list[dict]:
    """The archived runs' configs (``configs.parquet``'s YAML, plain values only)."""
    from .experiment.config import parse_yaml

    if configs.empty or "config_yaml" not in configs:
        return []
    return [parse_yaml(y, f"configs.parquet, run {rid}") or {} for rid, y in zip(configs["run_id"], configs["config_yaml"])]


PROVENANCE_KEYS = ("version", "commit", "dirty", "device", "device_name")


def runs_provenance(configs: pd.DataFrame) -> list[dict]:
    """The code and devices the archived runs ran on, from each run's own provenance (not the
    archiving machine's): one entry per (package version, commit, dirty, device, device name) with
    its number of runs, the most common first. ``dirty``: the package source had uncommitted changes
    when the run started (None: unknown)."""
    if configs.empty:
        return []
    keys = []
    for text in configs["provenance_json"]:
        p = json.loads(text) if isinstance(text, str) and text else {}
        keys.append(tuple(p.get(k) if k == "dirty" else str(p.get(k, "unknown")) for k in PROVENANCE_KEYS))
    counts = Counter(keys)
    order = sorted(counts, key=lambda k: (-counts[k], *map(str, k)))
    return [{**dict(zip(PROVENANCE_KEYS, k)), "runs": counts[k]} for k in order]


def portable_path(path: str | Path) -> str:
    """``path`` relative to the working directory (the repository) when inside it, else its last
    component: an archive names no directory of the machine that wrote it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def portable_run_dir(run_dir: str | Path) -> str:
    """A run directory as ``runs/<id>``: relative to its sweep directory."""
    p = Path(run_dir)
    return str(Path(p.parent.name, p.name)) if p.parent.name else p.name


def portable_command(command: str, *paths: str | Path) -> str:
    """``command`` with each of ``paths`` (as written in it, or absolute) replaced by :func:`portable_path`."""
    for path in paths:
        for form in sorted({str(path), str(Path(path).resolve())}, key=len, reverse=True):
            if Path(form).is_absolute() or form in command.split():
                command = command.replace(form, portable_path(path))
    return command


def history_once(old: list[dict], added: list[str], time_utc: str) -> list[dict]:
    """The archive's history with a new entry: each run under ``added`` once, in the entry that first
    archived it; a run archived again later (its tables rebuilt) is listed under ``re_added``."""
    seen: set[str] = set()
    out = []
    for h in [*old, {"time_utc": time_utc, "added": added}]:
        first = [r for r in h.get("added", []) if r not in seen]
        again = sorted({*h.get("re_added", []), *(r for r in h.get("added", []) if r in seen)})
        seen.update(first)
        out.append({"time_utc": h["time_utc"], "added": first, **({"re_added": again} if again else {})})
    return out


def refresh_index(out: str | Path) -> dict:
    """Bring an archive written before these rules up to date from its own tables: recompute
    ``runs_provenance`` and the history (each run once), and name no machine path (``source``,
    ``command``, and ``runs.parquet``'s ``run_dir`` as ``runs/<id>``). Returns the new index."""
    out = Path(out)
    index = read_json(out / INDEX)
    if not index:
        raise FileNotFoundError(f"archive: no {INDEX} in {out}")
    history = index.get("history", [])
    if history:
        *old, last = history
        history = history_once(old, last.get("added", []), last["time_utc"])
    source = index.get("source", "")
    index.update(
        runs_provenance=runs_provenance(read_parquet(out / "configs.parquet")),
        history=history,
        source=Path(source).name if Path(source).is_absolute() else source,
        command=" ".join(
            Path(w).name if Path(w).is_absolute() else w for w in index.get("command", "").split()
        ),
    )
    runs = read_parquet(out / "runs.parquet")
    if len(runs) and "run_dir" in runs:
        portable = [portable_run_dir(d) for d in runs["run_dir"]]
        if portable != runs["run_dir"].tolist():
            write_table(out / "runs.parquet", runs.assign(run_dir=portable))
    write_json(out / INDEX, index)
    return index


def _commit() -> dict:
    from .provenance import source_commit

    return source_commit()


def _missing_baselines(old: pd.DataFrame, cfgs: list[dict]) -> list[tuple[str, dict]]:
    """The (baseline, setting) pairs of these runs that ``old`` (the baselines table) lacks (a
    ``kind: cross`` run, another library's agent on its own environment, has no MEC baseline)."""
    seen = set(zip(old["baseline"], old["setting"])) if len(old) else set()
    missing = []
    for cfg in cfgs:
        if cfg.get("kind") == "cross":
            continue
        key = _baseline_key(cfg)
        setting = json.dumps(key, sort_keys=True)
        for algo in BASELINES:
            if (algo, setting) not in seen:
                seen.add((algo, setting))
                missing.append((algo, key))
    return missing


def _add_baselines(out: Path, old: pd.DataFrame, cfgs: list[dict]) -> None:
    """The baselines for every (setting, seed) of the runs ``cfgs`` not yet in ``old``."""
    rows = [old] if len(old) else []
    for algo, key in _missing_baselines(old, cfgs):
        rows.append(pd.DataFrame([baseline_return(key, algo)]))
    if rows:
        df = pd.concat(rows, ignore_index=True).sort_values(["baseline", "seed", "setting"], kind="stable")
        write_table(out / "baselines.parquet", df.reset_index(drop=True))


def _result(out: Path, added: list[str], archived: int, finished: int, total: int) -> dict:
    sizes = {p.name: p.stat().st_size for p in sorted(out.glob("*.parquet"))}
    return {
        "added": added,
        "archived": archived,
        "finished": finished,
        "runs_in_sweep": total,
        "bytes": sizes,
        "bytes_per_run": sum(sizes.values()) / archived if archived else float("nan"),
    }
