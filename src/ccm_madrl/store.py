"""The run store: load sweeps (or single runs) into pandas DataFrames without knowing file names.

    >>> from ccm_madrl.store import load
    >>> s = load("sweeps/table1_s10")          # a sweep dir, a run dir, or a list of them
    >>> s.runs        # one row per run: id, sweep, status, config columns, provenance, results
    >>> s.metrics     # one row per (run, episode)
    >>> s.monitor     # one row per (run, measured episode, role, agent)
    >>> s.stops       # one row per (run, role, agent): stop episodes (exact / thresholded)

The on-disk layout is documented in ``docs/run_store.md``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .config.agent import nest_flat_keys
from .config.experiment import ConfigError, load_yaml, parse_yaml, stored_config
from .monitor import compact
from .monitor.compact import SUMMARY, read_agents
from .monitor.stops import agent_stops, run_stops_of
from .rundir import (
    FINAL_EPISODES,
    FINISHED_STATES,
    RunDir,
    SweepDir,
    effective_state,
    final_return,
    read_json,
    read_parquet,
)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = tuple(v)
        else:
            out[key] = v
    return out


def resolve_config(cfg: dict) -> dict:
    """A run's config with every option of the current schema: an option added after the run was
    written reads as its default, which is what the run ran with (options are added with the old
    behaviour as their default), so that the runs of one sweep written by different versions have
    the same columns and values. A config the schema no longer accepts is kept as written."""
    try:
        return stored_config(cfg).model_dump(mode="json")  # imports nothing: stored data names no code
    except Exception:  # noqa: BLE001 - an old or foreign config: as written
        return cfg


def config_columns(cfg: dict) -> dict:
    """The run table's ``cfg.*`` columns of a run's config (resolved against the current schema)."""
    return {f"cfg.{k}": v for k, v in _flatten(resolve_config(cfg)).items()}


def sweep_name(sweep_dir: Path) -> str:
    """A sweep's own name (its manifest's, else its sweep.yaml's), else the directory's name."""
    sd = SweepDir(sweep_dir)
    man = sd.manifest()
    if isinstance(man.get("sweep"), str) and man["sweep"]:
        return man["sweep"]
    try:
        spec = load_yaml(sd.sweep_file)
        if spec.get("name"):
            return str(spec["name"])
    except ValueError:  # absent, unreadable or refused (ConfigError): the directory's name
        pass
    return sweep_dir.name


def find_runs(paths: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """(sweep name, run dir) for every run under the given sweep or run directories."""
    found = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"store: no such directory: {p}")
        if not p.is_dir():
            raise NotADirectoryError(f"store: {p}: is not a directory (expected a sweep or run directory)")
        if RunDir(p).is_run():
            parent = p.parent.parent if p.parent.name == "runs" else p.parent
            found.append((sweep_name(parent), p))
            continue
        sweep = sweep_name(p)
        subs = [r.path for r in SweepDir(p).run_dirs()]
        if not subs:
            raise FileNotFoundError(f"store: {p} holds no runs (expected run directories with a config.yaml)")
        found.extend((sweep, d) for d in subs)
    return found


# the metrics columns the run table needs (final return, constraint rate, untrained return)
RUN_METRICS = ["episode", "eval_return", "eval_constraint_frac", "trained"]
PROVENANCE_FIELDS = ("version", "commit", "dirty", "device", "device_name", "torch", "rng_mode",
                     "actor_update", "seed", "hostname")  # fmt: skip
TABLES = ("metrics", "monitor", "monitor_summary", "stops")


def untrained_return(m: pd.DataFrame) -> float:
    """The first evaluation before any training step (the untrained policy's return), else NaN."""
    if "eval_return" not in m or m.empty:
        return float("nan")
    m = m.sort_values("episode") if "episode" in m else m
    trained = m["trained"].fillna(False).astype(bool) if "trained" in m else pd.Series(False, index=m.index)
    before = ~trained.cumsum().shift(1, fill_value=0).astype(bool)  # no training step yet
    ev = m.loc[before, "eval_return"].dropna()
    return float(ev.iloc[0]) if len(ev) else float("nan")


def first_actor_stops(stops: pd.DataFrame) -> dict:
    """Run-level: the episode the first actor stopped for good (min over actors of ``stop_exact`` /
    ``stop_thr`` / ``grad_zero``; NaN when none did)."""
    out = {}
    a = stops[stops["is_actor"].astype(bool)] if len(stops) else stops
    for col in ("stop_exact", "stop_thr", "grad_zero"):
        out[f"first_actor_{col}"] = (
            float(a[col].min()) if len(a) and col in a and a[col].notna().any() else np.nan
        )
    return out


def _nan(v):
    return np.nan if v is None else v


def concat_tables(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Tables (of runs, or of archives) one below the other, each column typed by the parts that
    have values in it: a column all missing in one part (a stop that never happened there) is left
    out of that part before the concatenation and comes back as missing values, so a float
    column stays float (pandas 2.1+ would let the all-missing part decide)."""
    if not frames:
        return pd.DataFrame()
    cols = list(dict.fromkeys(c for f in frames for c in f.columns))
    valued = {c for f in frames for c in f.columns if f[c].notna().any()}
    parts = [f.drop(columns=[c for c in f.columns if c in valued and not f[c].notna().any()]) for f in frames]
    return pd.concat(parts, ignore_index=True).reindex(columns=cols)


class Store:
    """Runs read from sweep and run directories (see the module docstring). Every table is built
    once, on first use; :meth:`table` reads selected columns only."""

    def __init__(self, paths: str | Path | Iterable[str | Path]):
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        self.run_dirs, self.duplicates = _dedupe(find_runs(self.paths))
        for _, g in self.duplicates.groupby("kept", sort=False) if len(self.duplicates) else []:
            warnings.warn(
                f"store: {len(g) + 1} copies of one run (config id {g['config_id'].iloc[0]}): kept "
                f"{g['kept'].iloc[0]}, ignored {', '.join(g['dropped'])}",
                stacklevel=2,
            )
        self._configs: dict[Path, dict] = {}
        self._stops: dict[Path, pd.DataFrame] = {}
        ids = unique_run_ids([s for s, _ in self.run_dirs], [rd.name for _, rd in self.run_dirs])
        self._run_ids = {rd: rid for (_, rd), rid in zip(self.run_dirs, ids)}

    @property
    def sweep_names(self) -> list[str]:
        """The sweeps' own names, in the order given."""
        return list(dict.fromkeys(s for s, _ in self.run_dirs))

    @cached_property
    def runs(self) -> pd.DataFrame:
        rows = []
        for sweep, rd in self.run_dirs:
            run = RunDir(rd)
            cfg = self.config(rd)
            row: dict = {"run_id": self._run_ids[rd], "sweep": sweep, "run_dir": str(rd)}
            status = run.status()
            row["status"] = effective_state(status) if status else "unknown"
            row["heartbeat"] = status.get("heartbeat")
            row["episodes_done"] = status.get("episodes_done", 0)
            row.update(config_columns(cfg))
            prov = run.provenance()
            row.update({f"prov.{k}": prov.get(k) for k in PROVENANCE_FIELDS})
            # the size of the pack its last segment trained in (1: alone)
            row["prov.pack_size"] = (prov.get("pack") or {}).get("size", 1)
            m = run.metrics(RUN_METRICS)
            # a diverged run has no final policy: its evaluations before the divergence are in metrics
            row["final_return"] = final_return(m) if row["status"] != "diverged" else np.nan
            # how many evaluations the final return averages (fewer than FINAL_EPISODES in a short run)
            row["final_evals"] = int(min(m["eval_return"].notna().sum(), FINAL_EPISODES)) if "eval_return" in m else 0
            row["final_constraint_frac"] = (
                final_return(m, column="eval_constraint_frac") if np.isfinite(row["final_return"]) else np.nan
            )
            row["untrained_return"] = untrained_return(m)
            row.update(self._run_stops(rd, status))
            rows.append(row)
        return pd.DataFrame(rows)

    def _run_stops(self, rd: Path, status: dict) -> dict:
        """Run-level stop events: a finished run's summary (status.json, else monitor/summary.json),
        else computed from its monitor rows; plus the first actor's stop from the per-agent stops."""
        finished = status.get("state") in FINISHED_STATES
        summary = status.get("stops") if finished else None
        if not isinstance(summary, dict) and finished:
            summary = read_json(RunDir(rd).monitor_dir / SUMMARY) or None
        stops = self._stops_of(rd)
        if isinstance(summary, dict) and summary:
            out = {k: _nan(v) for k, v in summary.items()}
        elif len(stops):
            out = run_stops_of(stops, self._threshold(rd))
        else:
            return {}
        return {**out, **first_actor_stops(stops)} if len(stops) else out

    @cached_property
    def metrics(self) -> pd.DataFrame:
        return self.table("metrics")

    @cached_property
    def monitor(self) -> pd.DataFrame:
        return self.table("monitor")

    @cached_property
    def monitor_summary(self) -> pd.DataFrame:
        """One row per (run, measured episode, role): aggregates over the agents
        (``monitor.compact.aggregate_agents``)."""
        return self.table("monitor_summary")

    @cached_property
    def stops(self) -> pd.DataFrame:
        return self._per_run(self._stops_of)

    @property
    def baselines(self) -> pd.DataFrame:
        """The non-learning baselines' returns: computed when a sweep is archived
        (``ccm_madrl.archive``); empty for run directories."""
        return pd.DataFrame()

    def table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """One of :data:`TABLES` over all runs, only ``columns`` (plus ``run_id``) when given."""
        if name not in TABLES:
            raise ValueError(f"table: unknown table {name!r}; allowed: {', '.join(TABLES)}")
        if name == "stops":
            st = self.stops
            return st[[c for c in st.columns if c in (columns or st.columns) or c == "run_id"]]
        read = {
            "metrics": lambda rd: RunDir(rd).metrics(columns),
            "monitor": lambda rd: read_agents(RunDir(rd).monitor_dir, columns),
            "monitor_summary": lambda rd: self._summary_of(rd, columns),
        }[name]
        return self._per_run(read)

    def _per_run(self, fn) -> pd.DataFrame:
        return concat_tables(
            [f.assign(run_id=self._run_ids[rd]) for _, rd in self.run_dirs if len(f := fn(rd))]
        )

    def config(self, rd: Path) -> dict:
        """The resolved config of a run directory (cached), its agent options in their sub-configs."""
        if rd not in self._configs:
            cfg = load_yaml(RunDir(rd).config_path)  # plain values only; ConfigError naming the file
            if isinstance(cfg.get("agent"), dict):  # a run written before 0.2.0: flat agent keys
                cfg["agent"] = nest_flat_keys(cfg["agent"])
            self._configs[rd] = cfg
        return self._configs[rd]

    def descriptions(self) -> list[tuple[dict, dict]]:
        """(resolved config, learner description) of every run, in order."""
        return [(self.config(rd), RunDir(rd).learner()) for _, rd in self.run_dirs]

    def _threshold(self, rd: Path) -> float:
        return self.config(rd).get("monitor", {}).get("stop_threshold", 1e-8)

    def _stops_of(self, rd: Path) -> pd.DataFrame:
        """Per-agent stop events: the compacted monitor's, else computed from the monitor rows."""
        if rd not in self._stops:
            mdir = RunDir(rd).monitor_dir
            if (mdir / compact.STOPS).exists():
                self._stops[rd] = read_parquet(mdir / compact.STOPS)
            else:
                a = read_agents(mdir, STOP_COLUMNS) if mdir.is_dir() else pd.DataFrame()
                self._stops[rd] = agent_stops(a, self._threshold(rd)) if len(a) else pd.DataFrame()
        return self._stops[rd]

    def _summary_of(self, rd: Path, columns: list[str] | None) -> pd.DataFrame:
        mdir = RunDir(rd).monitor_dir
        if (mdir / compact.EPISODES).exists() and compact.episodes_current(mdir):
            return read_parquet(mdir / compact.EPISODES, columns and ["episode", "role", *columns])
        a = read_agents(mdir) if mdir.is_dir() else pd.DataFrame()
        s = compact.aggregate_agents(a, self._threshold(rd)) if len(a) else pd.DataFrame()
        return s[[c for c in s.columns if c in ("episode", "role", *columns)]] if columns and len(s) else s


STOP_COLUMNS = ["episode", "role", "agent", "is_actor", "steps", "changed", "max_abs_change", "grad_norm"]


def _config_id(rd: Path) -> str:
    """The config id of a run directory: its status's or provenance's, else computed from config.yaml."""
    run = RunDir(rd)
    for info in (run.status(), run.provenance()):
        cid = info.get("config_id")
        if cid:
            return str(cid)
    try:
        return stored_config(load_yaml(run.config_path)).id()
    except (OSError, ValueError):
        return f"unreadable:{rd.resolve()}"


def unique_run_ids(sweeps: list[str], names: list[str]) -> list[str]:
    """The store's run ids: a run directory's name (its config id), unless an earlier sweep holds a
    run of the same name (the same config in two sweeps: a screen that repeats the baseline's
    settings), then ``<sweep>/<name>``, so that every table's ``run_id`` names one run."""
    seen: set[str] = set()
    out = []
    for sweep, name in zip(sweeps, names):
        out.append(name if name not in seen else f"{sweep}/{name}")
        seen.add(name)
    return out


def _dedupe(found: list[tuple[str, Path]]) -> tuple[list[tuple[str, Path]], pd.DataFrame]:
    """One run per (sweep, config id) (the config id includes the seed): copies of a run within a
    sweep (the same directory given twice, a copied run directory) are dropped, keeping the most
    advanced copy (done first, then most episodes); two sweeps may each hold the same config.
    Returns the kept runs in their order and one row per dropped copy."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (sweep, rd) in enumerate(found):
        groups.setdefault((sweep, _config_id(rd)), []).append(i)
    keep, dropped = set(), []
    for (_, cid), idx in groups.items():

        def rank(i: int) -> tuple:
            st = RunDir(found[i][1]).status()
            return (st.get("state") == "done", int(st.get("episodes_done") or 0), -i)

        best = max(idx, key=rank)
        keep.add(best)
        dropped += [
            {"config_id": cid, "kept": str(found[best][1]), "dropped": str(found[i][1])}
            for i in idx
            if i != best
        ]
    cols = ["config_id", "kept", "dropped"]
    return [f for i, f in enumerate(found) if i in keep], pd.DataFrame(dropped, columns=cols)


# ------------------------------------------------------------------------------ archives
# an archive (``ccm_madrl.archive`` writes it): a sweep's finished runs as Parquet tables
INDEX = "archive.json"
RUN_TABLES = ("runs", "configs", "metrics", "monitor_summary", "stops")


def is_archive(path: str | Path) -> bool:
    return (Path(path) / INDEX).exists()


class ArchiveStore:
    """The store's tables (``runs``, ``metrics``, ``monitor_summary``, ``stops``) read from one or
    more archives; plus ``baselines``. Per-agent monitor rows are not archived (``monitor`` is
    empty): the report's figures use ``monitor_summary``."""

    def __init__(self, paths: str | Path | Iterable[str | Path]):
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            if not is_archive(p):
                raise FileNotFoundError(f"archive: {p} holds no {INDEX} (not an archive)")
        self.index = {p: read_json(p / INDEX) for p in self.paths}
        self.duplicates = pd.DataFrame(columns=["config_id", "kept", "dropped"])
        self.monitor = pd.DataFrame()
        # a run id that an earlier archive holds too (the same config in two sweeps) is renamed in
        # this archive's tables by the live store's rule (store.unique_run_ids)
        owners, ids = [], []
        for p in self.paths:
            r = read_parquet(p / "runs.parquet", ["run_id"])
            for rid in r["run_id"] if len(r) else []:
                owners.append(p)
                ids.append(str(rid))
        sweeps = [self.index[p].get("sweep", p.name) for p in owners]
        self._renamed: dict[Path, dict[str, str]] = {p: {} for p in self.paths}
        for p, old, new in zip(owners, ids, unique_run_ids(sweeps, ids)):
            if new != old:
                self._renamed[p][old] = new

    @property
    def sweep_names(self) -> list[str]:
        return list(dict.fromkeys(self.runs["sweep"])) if len(self.runs) else []

    def table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A table over all archives; only ``columns`` (plus ``run_id``) when given."""
        if name not in (*RUN_TABLES, "baselines"):
            raise ValueError(
                f"table: unknown table {name!r}; allowed: {', '.join((*RUN_TABLES, 'baselines'))}"
            )
        cols = None if columns is None else list(dict.fromkeys(["run_id", *columns]))
        if name == "baselines" and cols:
            cols.remove("run_id")
        frames = []
        for p in self.paths:
            f = read_parquet(p / f"{name}.parquet", cols)
            if not len(f):
                continue
            if self._renamed[p] and "run_id" in f:
                f["run_id"] = f["run_id"].replace(self._renamed[p])
            frames.append(f)
        return concat_tables(frames)

    @cached_property
    def runs(self) -> pd.DataFrame:
        r = self.table("runs")
        c = self.table("configs", ["config_yaml"]).set_index("run_id")["config_yaml"] if len(r) else None
        if c is not None and r["run_id"].isin(c.index).all():
            # config columns from each run's resolved config (an option added since reads as its default)
            cols = pd.DataFrame([config_columns(self._config(c[rid], rid)) for rid in r["run_id"]])
            r = pd.concat([r.drop(columns=[x for x in r.columns if x.startswith("cfg.")]), cols], axis=1)
        for c in r.select_dtypes("object").columns:  # lists come back as arrays: tuples, as live
            r[c] = [tuple(v.tolist()) if isinstance(v, np.ndarray) else v for v in r[c]]
        return r

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """The metrics, with the monitor columns rebuilt from ``monitor_summary`` (and the
        effective learning rates from the config): the live store's columns."""
        m = self.table("metrics")
        if m.empty or self.monitor_summary.empty:
            return m
        derived = compact.metrics_from_summary(self.monitor_summary)
        m = m.merge(derived, on=["run_id", "episode"], how="left")
        r = self.runs.set_index("run_id")
        for role, col in (("actor", "cfg.agent.actor_lr"), ("critic", "cfg.agent.critic_lr")):
            if col in r and "batch_reward_abs" in m:
                lr = m["run_id"].map(r[col]).astype(float)
                m[f"effective_{role}_lr"] = (lr * m["batch_reward_abs"]).where(m["actor_grad_norm"].notna())
        return m

    @cached_property
    def monitor_summary(self) -> pd.DataFrame:
        return self.table("monitor_summary")

    @cached_property
    def stops(self) -> pd.DataFrame:
        return self.table("stops")

    @cached_property
    def baselines(self) -> pd.DataFrame:
        """The baselines of every archive, with its sweep's name (``sweep``)."""
        frames = [
            read_parquet(p / "baselines.parquet").assign(sweep=self.index[p].get("sweep", p.name))
            for p in self.paths
        ]
        return concat_tables([f for f in frames if len(f)])

    def _config(self, text: str, run_id: str) -> dict:
        """A run's stored config (``configs.parquet``'s YAML): plain values only (``parse_yaml``),
        ConfigError naming the archive and the run otherwise."""
        where = f"{', '.join(str(p) for p in self.paths)}: configs.parquet, run {run_id}"
        try:
            cfg = parse_yaml(text, where) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{where}: not valid YAML ({' '.join(str(err).split())[:120]})") from None
        if not isinstance(cfg, dict):
            raise ConfigError(f"{where}: the config is not a mapping")
        return cfg

    def descriptions(self) -> list[tuple[dict, dict]]:
        c = self.table("configs", ["run_id", "config_yaml", "learner_json"])
        return [
            (self._config(y, rid), json.loads(j))
            for rid, y, j in zip(c["run_id"], c["config_yaml"], c["learner_json"])
        ]


def load(paths: str | Path | Iterable[str | Path]):
    """Open one or more sweep or run directories, or one or more archives (``ccm_madrl.archive``:
    directories holding ``archive.json``); both give the same tables."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    kinds = {is_archive(p) for p in paths}
    if kinds == {True}:
        return ArchiveStore(paths)
    if True in kinds:
        raise ValueError("store: give either archives or sweep/run directories, not both")
    return Store(paths)
