"""A finished run's monitor data as one file per table, and the per-episode aggregates over agents.

While a run trains, the monitor writes one Parquet part per checkpoint (``monitor/agents/part-*``,
~200 files for 2000 episodes). When it finishes, :func:`compact_monitor` replaces them by:

- ``monitor/agents.parquet``: every per-agent row (the parts concatenated, same columns);
- ``monitor/episodes.parquet``: one row per (measured episode, role): aggregates over the agents
  (:func:`aggregate_agents`: quantiles of gradient norms, counts of changed / stopped agents,
  saturation fractions, pre-activation extremes, per-layer means: gradient norms, dead and dormant
  unit fractions, the plasticity measures);
- ``monitor/stops.parquet``: one row per (role, agent): its stop events (:func:`agent_stops`).

Readers (``ccm_madrl.store``, ``ccm_madrl.archive``) take these when present, else compute them
from the parts, so that runs written before compaction existed read the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..rundir import read_parquet, write_parquet
from .stops import agent_stops

SUMMARY = "summary.json"


def read_agents(monitor_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Every per-agent row: the compacted ``agents.parquet`` of a finished run and any parts
    (``monitor.compact``); only ``columns`` (those present) when given."""
    d = Path(monitor_dir)
    files = ([d / "agents.parquet"] if (d / "agents.parquet").exists() else []) + sorted(
        (d / "agents").glob("part-*.parquet")
    )
    if not files:
        return pd.DataFrame()
    return pd.concat([read_parquet(p, columns) for p in files], ignore_index=True)


AGENTS = "agents.parquet"
EPISODES = "episodes.parquet"
STOPS = "stops.parquet"

QUANTILES = {"min": 0.0, "q25": 0.25, "median": 0.5, "q75": 0.75, "max": 1.0}
# per-agent columns averaged over the agents (when present), and the per-layer gradient norms
MEAN_COLUMNS = (
    "grad_norm",
    "update_l2",
    "weight_l2",
    "frac_sat_exact",
    "frac_sat_near",
    "frac_out_gt09",
    "z_mean",
    "z_std",
    "frac_flowing",
    "frac_saturated",
    "frac_dead",
    "frac_no_path",
    "weight_magnitude",
    "weight_difference",
)
# per-layer columns averaged over the agents: gradient norms, dead and dormant fractions of each ReLU,
# the plasticity measures of each hidden layer (features and weights; docs/monitor.md)
LAYER_PREFIXES = (
    "grad_norm.",
    "dead.",
    "dormant.",
    "active_units.",
    "feature_norm.",
    "feature_variance.",
    "stable_rank.",
    "effective_rank.",
    "weight_magnitude.",
    "weight_difference.",
)


def aggregate_agents(agents: pd.DataFrame, threshold: float = 1e-8) -> pd.DataFrame:
    """One row per (episode, role) from the per-agent monitor rows of one run.

    Columns: ``episode``, ``role``, ``is_actor``, ``n_agents``; counts in the episode:
    ``n_changed`` (any weight changed), ``n_below_thr`` (largest |change| < threshold),
    ``n_grad_zero`` (gradient norm exactly 0); counts of agents whose stop event
    (``monitor.stops``) is at or before the episode: ``n_stopped_exact``, ``n_stopped_thr``,
    ``n_grad_zero_for_good``; quantiles over agents ``grad_norm_<q>`` (q = min, q25, median, q75,
    max) and ``max_abs_change_median``, ``max_abs_change_max``; means over agents
    ``<column>_mean`` of :data:`MEAN_COLUMNS` and of each per-layer column of :data:`LAYER_PREFIXES`;
    ``frac_sat_exact_max``; ``z_min`` (min over agents) and ``z_max`` (max). For a one-agent role
    (the critic) the quantiles other than ``max_abs_change_max`` are left empty (NaN): they equal
    the mean."""
    if agents.empty:
        return pd.DataFrame()
    keys = ["episode", "role"]
    a = agents.sort_values(keys + ["agent"], kind="stable")
    by = [a[k] for k in keys]
    g = a.groupby(keys, sort=True)
    out = g.agg(is_actor=("is_actor", "first"), n_agents=("agent", "size"))
    if "changed" in a:
        out["n_changed"] = g["changed"].sum()
    if "max_abs_change" in a:
        out["n_below_thr"] = (a["max_abs_change"] < threshold).groupby(by).sum()
    if "grad_norm" in a:
        out["n_grad_zero"] = (a["grad_norm"] == 0).groupby(by).sum()
        q = g["grad_norm"].quantile(list(QUANTILES.values())).unstack()
        q.columns = [f"grad_norm_{name}" for name in QUANTILES]
        out = out.join(q)
    if "max_abs_change" in a:
        out["max_abs_change_median"] = g["max_abs_change"].median()
        out["max_abs_change_max"] = g["max_abs_change"].max()
    means = [c for c in a.columns if c in MEAN_COLUMNS or c.startswith(LAYER_PREFIXES)]
    if means:
        out = out.join(g[means].mean().add_suffix("_mean"))
    if "frac_sat_exact" in a:
        out["frac_sat_exact_max"] = g["frac_sat_exact"].max()
    if "z_min" in a:
        out["z_min"] = g["z_min"].min()
        out["z_max"] = g["z_max"].max()
    out = out.reset_index()
    single = (out["n_agents"] == 1).to_numpy()
    for c in [f"grad_norm_{q}" for q in QUANTILES] + ["max_abs_change_median"]:
        if c in out:
            out.loc[single, c] = np.nan
    # agents stopped (for good) by each episode, from the per-agent stop events
    st = agent_stops(a, threshold)
    for col, name in (("stop_exact", "n_stopped_exact"), ("stop_thr", "n_stopped_thr"),
                      ("grad_zero", "n_grad_zero_for_good")):  # fmt: skip
        counts = np.zeros(len(out), dtype="int32")
        for role, rs in st.groupby("role"):
            ev = np.sort(rs[col].dropna().to_numpy())
            sel = (out["role"] == role).to_numpy()
            counts[sel] = np.searchsorted(ev, out.loc[sel, "episode"].to_numpy(), side="right")
        out[name] = counts
    for c in out.columns:
        if c.startswith("n_"):
            out[c] = out[c].astype("int32")
    return out


def metrics_from_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The metrics table's monitor columns (``monitor.core.summarize``: ``actors_changed`` ...
    ``grad_ratio``) per (run_id, episode), rebuilt from the per-(episode, role) aggregates; several
    actor roles are combined weighted by their agent counts."""
    if summary.empty:
        return pd.DataFrame()
    s = summary.copy()
    w = s["n_agents"].astype(float)
    keys = ["run_id", "episode"]
    out = []
    for is_actor, part in s.groupby(s["is_actor"].astype(bool)):
        ww = w[part.index]
        g = part.groupby(keys)

        def wmean(col, part=part, ww=ww, g=g):
            if col not in part:
                return pd.Series(np.nan, index=g.size().index)
            num = (part[col] * ww).groupby([part[k] for k in keys]).sum(min_count=1)
            den = ww.where(part[col].notna()).groupby([part[k] for k in keys]).sum()
            return num / den.where(den > 0)

        if is_actor:
            cols = {
                "actors_changed": g["n_changed"].sum().astype(float),
                "actor_max_abs_change": g["max_abs_change_max"].max(),
                "actor_grad_norm": wmean("grad_norm_mean"),
                "actor_sat_exact_frac": wmean("frac_sat_exact_mean"),
                "actor_out_gt09_frac": wmean("frac_out_gt09_mean"),
                "actor_z_absmax": np.maximum(g["z_min"].min().abs(), g["z_max"].max().abs())
                if "z_min" in part
                else wmean("z_min"),
                **{f"actor_{k}": wmean(f"{k}_mean") for k in
                   ("frac_flowing", "frac_saturated", "frac_dead", "frac_no_path")},
            }  # fmt: skip
        else:
            cols = {
                "critic_changed": (g["n_changed"].sum() == g["n_agents"].sum()),
                "critic_max_abs_change": g["max_abs_change_max"].max(),
                "critic_grad_norm": wmean("grad_norm_mean"),
            }
        out.append(pd.DataFrame(cols))
    df = pd.concat(out, axis=1)
    if "actor_grad_norm" in df and "critic_grad_norm" in df:
        df["grad_ratio"] = (df["actor_grad_norm"] / df["critic_grad_norm"]).where(df["critic_grad_norm"] > 0)
    return df.reset_index()


def compacted(monitor_dir: str | Path) -> bool:
    return (Path(monitor_dir) / AGENTS).exists()


def episodes_current(monitor_dir: str | Path) -> bool:
    """Whether a compacted run's episodes.parquet has every per-layer aggregate its agents.parquet
    allows (one written before a column joined :data:`LAYER_PREFIXES` lacks it: re-aggregate)."""
    import pyarrow.parquet as pq

    d = Path(monitor_dir)
    have = set(pq.read_schema(d / EPISODES).names)
    want = {f"{c}_mean" for c in pq.read_schema(d / AGENTS).names if c.startswith(LAYER_PREFIXES)}
    return want <= have


def compact_monitor(monitor_dir: str | Path, threshold: float, agents: pd.DataFrame | None = None) -> None:
    """Replace the parts of a finished run's monitor by one file per table (module docstring).
    Each file is written atomically before the parts are removed; calling it again is a no-op."""
    d = Path(monitor_dir)
    run = d.parent  # the run directory: no file written leads out of it (rundir.check_inside)
    parts = sorted((d / "agents").glob("part-*.parquet"))
    if compacted(d) and not parts:
        return
    a = read_agents(d) if agents is None else agents
    if a.empty:
        return
    write_parquet(d / AGENTS, a, run, compression="zstd")
    write_parquet(d / EPISODES, aggregate_agents(a, threshold), run, compression="zstd")
    write_parquet(d / STOPS, agent_stops(a, threshold), run, compression="zstd")
    for p in parts:
        p.unlink()
    try:
        (d / "agents").rmdir()
    except OSError:
        pass
