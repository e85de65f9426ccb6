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

from .experiment.runner import effective_state
from .monitor.integration import read_agents
from .monitor.stops import agent_stops, run_stops


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


def _is_run(p: Path) -> bool:
    return (p / "config.yaml").exists()


def sweep_name(sweep_dir: Path) -> str:
    """A sweep's own name (its manifest's, else its sweep.yaml's), else the directory's name."""
    man = _read_json(sweep_dir / "manifest.json")
    if isinstance(man.get("sweep"), str) and man["sweep"]:
        return man["sweep"]
    try:
        spec = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
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
        if _is_run(p):
            parent = p.parent.parent if p.parent.name == "runs" else p.parent
            found.append((sweep_name(parent), p))
            continue
        sweep = sweep_name(p)
        runs_root = p / "runs" if (p / "runs").is_dir() else p
        subs = sorted(d for d in runs_root.iterdir() if d.is_dir() and _is_run(d))
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
            status = _read_json(rd / "status.json")
            row["status"] = effective_state(status) if status else "unknown"
            row["heartbeat"] = status.get("heartbeat")
            row["episodes_done"] = status.get("episodes_done", 0)
            row.update({f"cfg.{k}": v for k, v in _flatten(cfg).items()})
            prov = _read_json(rd / "provenance.json")
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
            ev = m["eval_return"].dropna() if len(m) and "eval_return" in m else pd.Series(dtype=float)
            row["final_return"] = float(ev.tail(100).mean()) if len(ev) else np.nan
            row["final_constraint_frac"] = (
                float(m["eval_constraint_frac"].dropna().tail(100).mean())
                if len(ev) and "eval_constraint_frac" in m
                else np.nan
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
        """The resolved config of a run directory (cached)."""
        if rd not in self._configs:
            self._configs[rd] = yaml.safe_load((rd / "config.yaml").read_text())
        return self._configs[rd]

    def _threshold(self, rd: Path) -> float:
        return self.config(rd).get("monitor", {}).get("stop_threshold", 1e-8)

    @staticmethod
    def _metrics_of(rd: Path) -> pd.DataFrame:
        f = rd / "metrics.parquet"
        return pd.read_parquet(f) if f.exists() else pd.DataFrame()

    def _monitor_of(self, rd: Path) -> pd.DataFrame:
        if rd not in self._monitors:
            self._monitors[rd] = read_agents(rd / "monitor") if (rd / "monitor").is_dir() else pd.DataFrame()
        return self._monitors[rd]


def _config_id(rd: Path) -> str:
    """The config id of a run directory: its status's or provenance's, else computed from config.yaml."""
    for f in ("status.json", "provenance.json"):
        cid = _read_json(rd / f).get("config_id")
        if cid:
            return str(cid)
    from .experiment.config import build_config

    try:
        return build_config(yaml.safe_load((rd / "config.yaml").read_text())).id()
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
            st = _read_json(found[i][1] / "status.json")
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


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def load(paths: str | Path | Iterable[str | Path]) -> Store:
    """Open one or more sweep or run directories."""
    return Store(paths)
