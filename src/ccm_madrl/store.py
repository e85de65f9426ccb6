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

import warnings
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .agents.config import nest_flat_keys
from .monitor.integration import read_agents
from .monitor.stops import agent_stops, run_stops
from .rundir import RunDir, SweepDir, effective_state, final_return


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


def sweep_name(sweep_dir: Path) -> str:
    """A sweep's own name (its manifest's, else its sweep.yaml's), else the directory's name."""
    sd = SweepDir(sweep_dir)
    man = sd.manifest()
    if isinstance(man.get("sweep"), str) and man["sweep"]:
        return man["sweep"]
    try:
        spec = yaml.safe_load(sd.sweep_file.read_text())
        if isinstance(spec, dict) and spec.get("name"):
            return str(spec["name"])
    except (OSError, yaml.YAMLError):
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


class Store:
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
        self._monitors: dict[Path, pd.DataFrame] = {}

    @cached_property
    def runs(self) -> pd.DataFrame:
        rows = []
        for sweep, rd in self.run_dirs:
            cfg = self.config(rd)
            row: dict = {"run_id": rd.name, "sweep": sweep, "run_dir": str(rd)}
            status = RunDir(rd).status()
            row["status"] = effective_state(status) if status else "unknown"
            row["heartbeat"] = status.get("heartbeat")
            row["episodes_done"] = status.get("episodes_done", 0)
            row.update({f"cfg.{k}": v for k, v in _flatten(cfg).items()})
            prov = RunDir(rd).provenance()
            for k in (
                "version",
                "commit",
                "dirty",
                "device",
                "device_name",
                "torch",
                "rng_mode",
                "actor_update",
                "seed",
                "hostname",
            ):
                row[f"prov.{k}"] = prov.get(k)
            m = self._metrics_of(rd)
            row["final_return"] = final_return(m)
            row["final_constraint_frac"] = (
                final_return(m, column="eval_constraint_frac") if np.isfinite(row["final_return"]) else np.nan
            )
            agents = self._monitor_of(rd)
            row.update(run_stops(agents, self._threshold(rd)) if len(agents) else {})
            rows.append(row)
        return pd.DataFrame(rows)

    @cached_property
    def metrics(self) -> pd.DataFrame:
        return self._per_run(self._metrics_of)

    @cached_property
    def monitor(self) -> pd.DataFrame:
        return self._per_run(self._monitor_of)

    @cached_property
    def stops(self) -> pd.DataFrame:
        return self._per_run(
            lambda rd: (
                agent_stops(self._monitor_of(rd), self._threshold(rd))
                if len(self._monitor_of(rd))
                else pd.DataFrame()
            )
        )

    def _per_run(self, fn) -> pd.DataFrame:
        frames = [f.assign(run_id=rd.name) for _, rd in self.run_dirs if len(f := fn(rd))]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def config(self, rd: Path) -> dict:
        """The resolved config of a run directory (cached), its agent options in their sub-configs."""
        if rd not in self._configs:
            cfg = yaml.safe_load(RunDir(rd).config_path.read_text())
            if isinstance(cfg.get("agent"), dict):  # a run written before 0.2.0: flat agent keys
                cfg["agent"] = nest_flat_keys(cfg["agent"])
            self._configs[rd] = cfg
        return self._configs[rd]

    def _threshold(self, rd: Path) -> float:
        return self.config(rd).get("monitor", {}).get("stop_threshold", 1e-8)

    @staticmethod
    def _metrics_of(rd: Path) -> pd.DataFrame:
        return RunDir(rd).metrics()

    def _monitor_of(self, rd: Path) -> pd.DataFrame:
        if rd not in self._monitors:
            mdir = RunDir(rd).monitor_dir
            self._monitors[rd] = read_agents(mdir) if mdir.is_dir() else pd.DataFrame()
        return self._monitors[rd]


def _config_id(rd: Path) -> str:
    """The config id of a run directory: its status's or provenance's, else computed from config.yaml."""
    run = RunDir(rd)
    for info in (run.status(), run.provenance()):
        cid = info.get("config_id")
        if cid:
            return str(cid)
    from .experiment.config import build_config

    try:
        return build_config(yaml.safe_load(run.config_path.read_text())).id()
    except (OSError, ValueError, yaml.YAMLError):
        return f"unreadable:{rd.resolve()}"


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


def load(paths: str | Path | Iterable[str | Path]) -> Store:
    """Open one or more sweep or run directories."""
    return Store(paths)
