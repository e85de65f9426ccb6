"""Export of finished runs to marl-eval's raw-data JSON (instadeepai/marl-eval, "Data Structure for
Raw Experiment data"), so that a study of this package can be aggregated and plotted with the
tools MARL papers use to compare methods.

Layout, one entry per finished run::

    {environment: {task: {algorithm: {"run_<seed>": {
        "step_<k>": {"step_count": <env steps trained so far>, "episode_return": [<return>],
                     "constraint_violation": [<fraction>]},
        ...,
        "absolute_metrics": {"episode_return": [<the final window's evaluation returns>], ...}}}}}

- environment: ``mec_n<clients>`` for this package's system, the library's environment name for a
  cross-domain run (``cfg.cross.env``);
- task: the sweep (its variant label where a sweep varies more than its grid);
- algorithm: the algorithm and its grid cell, ``<algorithm> client_lr=<a> master_lr=<c>``, so that
  marl-eval compares the cells of a grid as it compares algorithms;
- ``step_<k>``: the k-th evaluation of the run (an evaluation is the mean return over the run's
  evaluation episodes: one value per step); ``step_count``: environment steps of training done
  before it (episode x steps per episode);
- ``absolute_metrics``: the evaluations the run's final return averages (the last 100, or all where
  fewer): their mean is the report's final return.

Reads the store only (no training code); NaN values are left out of the lists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..rundir import FINAL_EPISODES

METRICS = {"eval_return": "episode_return", "eval_constraint_frac": "constraint_violation"}


def _environment(run: pd.Series) -> str:
    if run.get("cfg.kind") == "cross" and isinstance(run.get("cfg.cross.env"), str):
        return str(run["cfg.cross.env"])
    n = run.get("cfg.env.n_agents")
    return f"mec_n{int(n)}" if n is not None and not pd.isna(n) else "mec"


def _algorithm(run: pd.Series) -> str:
    return f"{run['algorithm']} client_lr={float(run['client_lr']):g} master_lr={float(run['master_lr']):g}"


def _values(x) -> list[float]:
    return [float(v) for v in np.atleast_1d(x) if not math.isnan(float(v))]


def _run_entry(m: pd.DataFrame, steps_per_episode: float) -> dict:
    evals = m.dropna(subset=["eval_return"]).sort_values("episode")
    cols = [c for c in METRICS if c in evals]
    entry = {}
    for k, row in enumerate(evals[["episode", *cols]].itertuples(index=False)):
        step = {"step_count": int(row[0] * steps_per_episode)}
        step.update({METRICS[c]: _values(v) for c, v in zip(cols, row[1:])})
        entry[f"step_{k}"] = step
    tail = evals.tail(FINAL_EPISODES)
    entry["absolute_metrics"] = {METRICS[c]: _values(tail[c].to_numpy()) for c in cols}
    return entry


def marl_eval_data(runs: pd.DataFrame, metrics: pd.DataFrame) -> dict:
    """The finished runs (the report's run frame) with their per-episode metrics, in marl-eval's
    nested layout. Runs without an evaluation are left out."""
    out: dict = {}
    by_run = dict(tuple(metrics.groupby("run_id"))) if len(metrics) else {}
    for _, run in runs.iterrows():
        m = by_run.get(run["run_id"])
        if m is None or m["eval_return"].notna().sum() == 0:
            continue
        steps = pd.to_numeric(run.get("steps"), errors="coerce")  # a cross run's: its env name (NaN)
        algo = out.setdefault(_environment(run), {}).setdefault(str(run["sweep"]), {})
        seeds = algo.setdefault(_algorithm(run), {})
        name = f"run_{int(run['cfg.seed'])}"
        if name in seeds:  # one seed twice in a cell (variants the label does not split)
            name = f"{name}_{run['run_id']}"
        seeds[name] = _run_entry(m, 1.0 if pd.isna(steps) else float(steps))
    return out


def write_marl_eval(runs: pd.DataFrame, metrics: pd.DataFrame, path: str | Path) -> Path | None:
    """Write :func:`marl_eval_data` as JSON (None, nothing written, when no run has an evaluation)."""
    data = marl_eval_data(runs, metrics)
    if not data:
        return None
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
    return path


__all__ = ["marl_eval_data", "write_marl_eval", "METRICS"]
