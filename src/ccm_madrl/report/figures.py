"""The report's figures (PNG and PDF), one style, colour-blind-safe (Okabe-Ito lines, cividis maps).

Every function takes the finished-run frame, the store and an output directory, saves its figure
and returns the PNG path, or None (with a reason in ``skipped``) when the data needed are absent.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..monitor.compact import metrics_from_summary  # noqa: E402
from .tables import mean_ci  # noqa: E402

TITLE_WIDTH = 44  # characters per line of a panel title (panels are ~4.2 in wide at font size 9)
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
    "legend.fontsize": 7,
}


def _describe(runs: pd.DataFrame) -> str:
    sweeps = sorted(runs["sweep"].unique())
    seeds = sorted(int(s) for s in runs["cfg.seed"].unique())
    return f"{len(runs)} runs from {', '.join(sweeps)}; seeds {seeds[:10]}{'...' if len(seeds) > 10 else ''}"


def _save(fig, out: Path, name: str, data: str) -> Path:
    fig.text(0.5, 0.005, f"data: {data}", ha="center", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    png = out / f"{name}.png"
    fig.savefig(png, bbox_inches="tight")  # keeps legends placed beside the axes
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    return png


def _lr_label(v: float) -> str:
    return f"{v:g}"


def _color(values: list, v) -> str:
    return OKABE_ITO[sorted(values).index(v) % len(OKABE_ITO)]


# ----------------------------------------------------------------------------- heatmaps
def _grid_heatmap(
    ax, g: pd.DataFrame, value, title: str, never_if_missing_event: str | None = None, fmt="{:.0f}"
):
    clr = sorted(g["client_lr"].unique())
    mlr = sorted(g["master_lr"].unique())
    z = np.full((len(clr), len(mlr)), np.nan)
    labels = [["n/a"] * len(mlr) for _ in clr]
    for (c, m), cell in g.groupby(["client_lr", "master_lr"]):
        i, j = clr.index(c), mlr.index(m)
        mean, _, n = mean_ci(value(cell))
        if n:
            z[i, j] = mean
            labels[i][j] = fmt.format(mean) + (
                f"\n({n}/{len(cell)})" if never_if_missing_event and n < len(cell) else ""
            )
        elif never_if_missing_event:
            labels[i][j] = "never"
    masked = np.ma.masked_invalid(z)
    empty = bool(np.isnan(z).all())  # nothing to colour: words in the cells, no colour bar
    im = ax.imshow(masked, cmap="cividis", origin="lower", aspect="auto")
    ax.set_facecolor("0.9")
    for i in range(len(clr)):
        for j in range(len(mlr)):
            if np.isnan(z[i, j]):
                ax.add_patch(
                    plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.6", lw=0)
                )
            ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(z[i, j]) and z[i, j] < np.nanmean(z) else "black")  # fmt: skip
    ax.set_xticks(range(len(mlr)), [_lr_label(v) for v in mlr])
    ax.set_yticks(range(len(clr)), [_lr_label(v) for v in clr])
    ax.set_xlabel("master (critic) lr")
    ax.set_ylabel("client (actor) lr")
    ax.set_title(textwrap.fill(title, TITLE_WIDTH) + ("\n(no value in any cell)" if empty else ""))
    ax.grid(False)
    return None if empty else im


def _colorbar(fig, im, ax, **kw) -> None:
    """A colour bar, unless the heatmap has nothing to colour (``im`` None)."""
    if im is not None:
        fig.colorbar(im, ax=ax, **kw)


class NoData(Exception):
    """A figure has nothing to draw; the message says why (the report lists it under "Figures
    not drawn" instead of drawing empty axes)."""


def _never_band(ax, horizon: float) -> float:
    """A band above the last episode for the runs in which an event never happened (censored at
    the run's end): shaded, labelled 'never' on the y axis, on a linear scale. Returns the y at
    which to draw those runs."""
    top, y = horizon * 1.12 + 1, horizon * 1.06 + 0.5
    ax.axhspan(horizon + 0.5 * (y - horizon), top, color="0.92", zorder=0, lw=0)
    ticks = [t for t in ax.get_yticks() if 0 <= t <= horizon]
    ax.set_yticks(ticks + [y], [f"{t:g}" for t in ticks] + ["never"])
    ax.set_ylim(bottom=min(0, ax.get_ylim()[0]), top=top)
    return y


def stop_heatmap(runs: pd.DataFrame, store, out: Path) -> Path | None:
    groups = list(runs.groupby(["sweep", "steps"]))
    fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 7), squeeze=False)
    for col, ((sweep, steps), g) in enumerate(groups):
        for row, (crit, label) in enumerate(
            (("all_actors_stop_exact", "exact"), ("all_actors_stop_thr", "|dw| < threshold"))
        ):
            im = _grid_heatmap(
                axes[row, col],
                g,
                lambda c, crit=crit: c[crit] if crit in c else [],
                f"{sweep}, {steps} steps: all actors stopped ({label})",
                "never",
            )
            _colorbar(fig, im, axes[row, col], label="episode (mean over seeds that stopped)")
    fig.suptitle("Stopping episode of all actors")
    return _save(fig, out, "stop_heatmap", _describe(runs))


def saturation_heatmap(runs: pd.DataFrame, store, out: Path) -> Path | None:
    m = store.metrics
    if m.empty or "actor_sat_exact_frac" not in m:
        return None
    last = m.dropna(subset=["actor_sat_exact_frac"]).sort_values("episode").groupby("run_id").tail(20)
    sat = last.groupby("run_id")["actor_sat_exact_frac"].mean()
    r = runs.assign(final_saturation=runs["run_id"].map(sat))
    groups = list(r.groupby(["sweep", "steps"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 3.6), squeeze=False)
    for col, ((sweep, steps), g) in enumerate(groups):
        im = _grid_heatmap(
            axes[0, col], g, lambda c: c["final_saturation"], f"{sweep}, {steps} steps", fmt="{:.2f}"
        )
        _colorbar(fig, im, axes[0, col], label="fraction of outputs exactly saturated")
    fig.suptitle("Final saturation of the actors' outputs (mean of the last 20 measured episodes)")
    return _save(fig, out, "saturation_heatmap", _describe(runs))


# ----------------------------------------------------------------------------- curves
def _curve(m: pd.DataFrame, col: str) -> pd.DataFrame:
    """Mean, min and max over runs of a per-episode column."""
    return m.groupby("episode")[col].agg(["mean", "min", "max"])


def learning_curves(runs: pd.DataFrame, store, out: Path) -> Path | None:
    m = store.metrics
    if m.empty:
        return None
    m = m[m["run_id"].isin(runs["run_id"])]
    groups = list(runs.groupby(["sweep", "steps", "master_lr"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.6), squeeze=False)
    for col, ((sweep, steps, mlr), g) in enumerate(groups):
        ax = axes[0, col]
        clrs = sorted(g["client_lr"].unique())
        for clr, cell in g.groupby("client_lr"):
            c = _curve(m[m["run_id"].isin(cell["run_id"])].dropna(subset=["eval_return"]), "eval_return")
            color = _color(clrs, clr)
            ax.plot(c.index, c["mean"], color=color, label=f"client lr {clr:g} ({len(cell)} seeds)")
            ax.fill_between(c.index, c["min"], c["max"], color=color, alpha=0.15)
            stop, _, n = (
                mean_ci(cell["all_actors_stop_thr"]) if "all_actors_stop_thr" in cell else (np.nan, np.nan, 0)
            )
            if n:
                ax.axvline(stop, color=color, ls=":", lw=1.2)
        ax.set(
            title=textwrap.fill(f"{sweep}, {steps} steps, master lr {mlr:g}", TITLE_WIDTH), xlabel="episode",
            ylabel="evaluation return",
        )  # a long sweep label wraps instead of running into its neighbour's title
        ax.legend()
    fig.suptitle(
        "Learning curves (mean, band = min..max over seeds; dotted: all actors stopped, |dw| < threshold)"
    )
    return _save(fig, out, "learning_curves", _describe(runs))


LINESTYLES = ["-", "--", ":", "-."]


def _by_client_lr(
    runs: pd.DataFrame,
    m: pd.DataFrame,
    cols: dict[str, str],
    title: str,
    name: str,
    out: Path,
    log: bool = True,
):
    """One panel per column (``cols``: column -> y label), one line per client lr, and per sweep
    variant where there are several (a variant: a sweep's runs that differ beyond its grid, e.g. the
    actor update order), each the mean over its runs."""
    if m.empty or any(c not in m for c in cols):
        return None
    m = m[m["run_id"].isin(runs["run_id"])]
    clrs = sorted(runs["client_lr"].unique())
    variants = sorted(runs["sweep"].unique())
    fig, axes = plt.subplots(1, len(cols), figsize=(4.6 * len(cols), 3.6), squeeze=False)
    for k, (col, ylabel) in enumerate(cols.items()):
        ax = axes[0, k]
        for (variant, clr), g in runs.groupby(["sweep", "client_lr"], sort=True):
            c = _curve(m[m["run_id"].isin(g["run_id"])].dropna(subset=[col]), col)
            if c.empty:
                continue
            label = f"client lr {clr:g}" if len(variants) == 1 else textwrap.shorten(f"{variant}: client lr {clr:g}", 60)
            ax.plot(c.index, c["mean"].clip(lower=1e-12) if log else c["mean"], color=_color(clrs, clr),
                    ls=LINESTYLES[variants.index(variant) % len(LINESTYLES)], label=label)  # fmt: skip
        if log:
            ax.set_yscale("log")
        ax.set(title=col, xlabel="episode", ylabel=ylabel)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, out, name, _describe(runs))


def _unit_metrics(store) -> pd.DataFrame:
    """The per-episode monitor summaries of the metrics table; for runs whose metrics do not hold
    them (``kind: cross`` runs: their metrics rows are the library's episodes and evaluations) they
    are rebuilt from the monitor's per-(unit, role) aggregates (its ``episode`` is the unit)."""
    m = store.metrics
    have = set(m.loc[m["actor_grad_norm"].notna(), "run_id"]) if "actor_grad_norm" in m else set()
    summ = store.monitor_summary
    if summ.empty:
        return m
    rest = metrics_from_summary(summ[~summ["run_id"].isin(have)])
    return pd.concat([m, rest], ignore_index=True) if len(rest) else m


def grad_norms(runs: pd.DataFrame, store, out: Path) -> Path | None:
    cols = {"actor_grad_norm": "L2 norm", "critic_grad_norm": "L2 norm", "grad_ratio": "actor / critic norm ratio"}
    return _by_client_lr(runs, _unit_metrics(store), cols,
                         "Actor vs critic gradient L2 norms (mean over runs; 0 drawn at 1e-12)", "grad_norms", out)  # fmt: skip


def saturation_over_time(runs: pd.DataFrame, store, out: Path) -> Path | None:
    cols = {"actor_sat_exact_frac": "fraction of outputs", "actor_out_gt09_frac": "fraction of outputs"}
    return _by_client_lr(runs, _unit_metrics(store), cols,
                         "Saturation of the actors' outputs over time (mean over runs)", "saturation", out, log=False)  # fmt: skip


def layer_grad_norms(runs: pd.DataFrame, store, out: Path) -> Path | None:
    mon = store.monitor_summary
    if mon.empty:
        return None
    mon = mon[mon["run_id"].isin(runs["run_id"])]
    layers = sorted(c for c in mon.columns if c.startswith("grad_norm.") and c.endswith("_mean"))
    if not layers:
        return None
    roles = sorted(mon["role"].unique())
    clrs = sorted(runs["client_lr"].unique())
    fig, axes = plt.subplots(
        len(roles), len(clrs), figsize=(3.8 * len(clrs), 3.2 * len(roles)), squeeze=False
    )
    for i, role in enumerate(roles):
        for j, clr in enumerate(clrs):
            ids = runs.loc[runs["client_lr"] == clr, "run_id"]
            d = mon[(mon["role"] == role) & mon["run_id"].isin(ids)]
            per = d.groupby("episode")[layers].mean()
            ax = axes[i, j]
            for k, layer in enumerate(layers):
                if per[layer].notna().any():
                    ax.plot(
                        per.index,
                        per[layer].clip(lower=1e-12),
                        color=OKABE_ITO[k % 8],
                        label=layer[len("grad_norm.") : -len("_mean")],
                    )
            ax.set_yscale("log")
            ax.set(title=f"{role}, client lr {clr:g}", xlabel="episode")
            ax.legend()
    fig.suptitle("Per-layer gradient L2 norms (actors: mean over agents and runs)")
    return _save(fig, out, "layer_grad_norms", _describe(runs))


def preactivations(runs: pd.DataFrame, store, out: Path) -> Path | None:
    mon = store.monitor_summary
    if mon.empty or "z_mean_mean" not in mon:
        return None
    a = mon[mon["is_actor"].astype(bool) & mon["run_id"].isin(runs["run_id"])]
    if a.empty:
        return None
    clrs = sorted(runs["client_lr"].unique())
    fig, axes = plt.subplots(1, len(clrs), figsize=(4.2 * len(clrs), 3.6), squeeze=False)
    for j, clr in enumerate(clrs):
        ids = runs.loc[runs["client_lr"] == clr, "run_id"]
        d = (
            a[a["run_id"].isin(ids)]
            .groupby("episode")
            .agg(
                z_mean=("z_mean_mean", "mean"),
                z_std=("z_std_mean", "mean"),
                z_min=("z_min", "min"),
                z_max=("z_max", "max"),
            )
        )
        ax = axes[0, j]
        for k, col in enumerate(["z_mean", "z_std", "z_min", "z_max"]):
            ax.plot(d.index, d[col], color=OKABE_ITO[k], label=col)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set(title=f"client lr {clr:g}", xlabel="episode", ylabel="output pre-activation z")
        ax.legend()
    fig.suptitle("Actors' output pre-activations (mean/std: mean over agents; min/max: extremes)")
    return _save(fig, out, "preactivations", _describe(runs))


def agent_stop_distribution(runs: pd.DataFrame, store, out: Path) -> Path | None:
    st = store.stops
    if st.empty:
        return None
    st = st[st["is_actor"] & st["run_id"].isin(runs["run_id"])].merge(
        runs[["run_id", "client_lr"]], on="run_id"
    )
    clrs = sorted(st["client_lr"].unique())
    panels = [(c, lbl) for c, lbl in (("stop_exact", "exact"), ("stop_thr", "|dw| < threshold")) if st[c].notna().any()]
    if not panels:
        raise NoData(f"no agent stopped ({len(st)} agents of {st['run_id'].nunique()} runs)")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.75 * len(panels), 3.6), squeeze=False)
    for k, (col, label) in enumerate(panels):
        ax = axes[0, k]
        for clr in clrs:
            v = st.loc[st["client_lr"] == clr, col]
            x = np.sort(v.dropna().to_numpy())
            if len(x):
                ax.step(x, np.arange(1, len(x) + 1) / len(v), where="post", color=_color(clrs, clr),
                        label=f"client lr {clr:g} ({v.notna().mean():.0%} of {len(v)} agents stopped)")  # fmt: skip
            else:
                ax.plot([], [], color=_color(clrs, clr), label=f"client lr {clr:g} (none of {len(v)} agents stopped)")
        ax.set(title=f"per-agent stopping episode ({label})", xlabel="episode", ylabel="fraction of agents stopped",
               ylim=(0, 1.02))  # fmt: skip
        ax.legend()
    fig.suptitle("Distribution of per-agent stopping episodes (ECDF over all agents of all runs)")
    return _save(fig, out, "agent_stop_distribution", _describe(runs))


def asymmetry_vs_stop(runs: pd.DataFrame, store, out: Path) -> Path | None:
    m = store.metrics
    if m.empty or "grad_ratio" not in m:
        return None
    early = m[m["trained"].astype(bool)].sort_values("episode").groupby("run_id").head(20)
    ratio = early.groupby("run_id")["grad_ratio"].median()
    r = runs.assign(ratio=runs["run_id"].map(ratio))
    horizon = float(r["episodes_done"].max())
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.set_ylim(0, horizon)
    never = _never_band(ax, horizon)  # runs whose actors never all stopped: censored at their end
    clrs = sorted(r["client_lr"].unique())
    for clr, g in r.groupby("client_lr"):
        stop = g["all_actors_stop_thr"] if "all_actors_stop_thr" in g else pd.Series(np.nan, index=g.index)
        ax.scatter(g["ratio"].clip(lower=1e-12), stop.fillna(never), color=_color(clrs, clr), s=20,
                   label=f"client lr {clr:g} ({int(stop.isna().sum())} of {len(g)} never stopped)")  # fmt: skip
    ax.set_xscale("log")
    ax.set(
        xlabel="actor / critic gradient norm (median of the first 20 trained episodes; 0 at 1e-12)",
        ylabel="all actors stopped (|dw| < threshold)",
    )
    ax.legend()
    ax.set_title("Gradient asymmetry vs stopping episode (one point per run)")
    return _save(fig, out, "asymmetry_vs_stop", _describe(runs))


def reward_at_stop(runs: pd.DataFrame, store, out: Path) -> Path | None:
    m = store.metrics
    if m.empty or "all_actors_stop_thr" not in runs or runs["all_actors_stop_thr"].isna().all():
        return None
    pts = []
    for _, run in runs.dropna(subset=["all_actors_stop_thr"]).iterrows():
        g = m[(m["run_id"] == run["run_id"])].dropna(subset=["eval_return"])
        at = g.loc[g["episode"] <= run["all_actors_stop_thr"], "eval_return"]
        if len(at):
            pts.append((float(at.iloc[-1]), run["final_return"], run["client_lr"]))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    clrs = sorted({p[2] for p in pts})
    for clr in clrs:
        xs = [p[0] for p in pts if p[2] == clr]
        ys = [p[1] for p in pts if p[2] == clr]
        ax.scatter(xs, ys, color=_color(clrs, clr), s=22, label=f"client lr {clr:g}")
    lo = min(min(p[0] for p in pts), min(p[1] for p in pts))
    hi = max(max(p[0] for p in pts), max(p[1] for p in pts))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", label="no change after the stop")
    ax.set(
        xlabel="evaluation return when all actors stopped",
        ylabel="final return (mean of last 100 evaluations)",
    )
    ax.legend()
    ax.set_title("Return at the stop vs at the end (runs whose actors all stopped)")
    return _save(fig, out, "reward_at_stop", _describe(runs.dropna(subset=["all_actors_stop_thr"])))


# ----------------------------------------------------------------------------- comparisons
def sweep_comparison(runs: pd.DataFrame, store, out: Path) -> Path | None:
    sweeps = sorted(runs["sweep"].unique())
    if len(sweeps) < 2:
        return None
    fig, axes = plt.subplots(1, len(sweeps) + 1, figsize=(4.2 * (len(sweeps) + 1), 3.8), squeeze=False)
    for k, sweep in enumerate(sweeps):
        g = runs[runs["sweep"] == sweep]
        im = _grid_heatmap(
            axes[0, k],
            g,
            lambda c: c["all_actors_stop_thr"] if "all_actors_stop_thr" in c else [],
            textwrap.fill(f"{sweep}: all actors stopped", 34),
            "never",
        )
        _colorbar(fig, im, axes[0, k])
    ax = axes[0, -1]
    cells = sorted({(c, m_) for c, m_ in zip(runs["client_lr"], runs["master_lr"])})
    width = 0.8 / len(sweeps)
    for k, sweep in enumerate(sweeps):
        means, errs = [], []
        for c, m_ in cells:
            mean, half, _ = mean_ci(
                runs.loc[
                    (runs["sweep"] == sweep) & (runs["client_lr"] == c) & (runs["master_lr"] == m_),
                    "final_return",
                ]
            )
            means.append(mean)
            errs.append(0 if np.isnan(half) else half)
        ax.bar(
            np.arange(len(cells)) + k * width,
            means,
            width,
            yerr=errs,
            color=OKABE_ITO[k % 8],
            label=textwrap.fill(sweep, 40),
            capsize=2,
        )
    ax.set_xticks(
        np.arange(len(cells)) + 0.4 - width / 2, [f"{c:g}/{m_:g}" for c, m_ in cells], rotation=45, fontsize=7
    )
    ax.set(title="final return (mean ± 95% CI over seeds)", xlabel="client lr / master lr")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Comparison of sweeps (stopping: |dw| < threshold)")
    return _save(fig, out, "sweep_comparison", _describe(runs))


def algorithm_comparison(runs: pd.DataFrame, store, out: Path) -> Path | None:
    algos = sorted(runs["algorithm"].unique())
    if len(algos) < 2:
        return None
    m = store.metrics
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, algo in enumerate(algos):
        ids = runs.loc[runs["algorithm"] == algo, "run_id"]
        c = _curve(m[m["run_id"].isin(ids)].dropna(subset=["eval_return"]), "eval_return")
        color = OKABE_ITO[k % 8]
        ls = "-" if k < 8 else "--"
        ax.plot(c.index, c["mean"], color=color, ls=ls, label=f"{algo} ({len(ids)} seeds)")
        ax.fill_between(c.index, c["min"], c["max"], color=color, alpha=0.1)
    ax.set(
        xlabel="episode",
        ylabel="evaluation return",
        title="Algorithms: evaluation return (mean, band = min..max over seeds)",
    )
    ax.legend(ncol=2)
    return _save(fig, out, "algorithm_comparison", _describe(runs))


def km_curves(runs: pd.DataFrame, store, out: Path) -> Path | None:
    """Kaplan-Meier curves of the all-actors stop (|dw| < threshold) and of the actors' gradient
    reaching exactly 0, per cell: one panel per (sweep, master lr, event), a line per client lr."""
    from . import stats

    events = ["all_actors_stop_thr", "all_actors_grad_zero"]
    groups = list(runs.groupby(["sweep", "steps", "master_lr"]))
    fig, axes = plt.subplots(len(events), len(groups), figsize=(3.6 * len(groups), 3.2 * len(events)),
                             squeeze=False)  # fmt: skip
    for col, ((sweep, steps, mlr), g) in enumerate(groups):
        clrs = sorted(g["client_lr"].unique())
        for row, event in enumerate(events):
            ax = axes[row, col]
            for clr, cell in g.groupby("client_lr"):
                d, e = stats.survival_data(cell, event)
                kmf = stats.kaplan_meier(d, e)
                sf = kmf.survival_function_.iloc[:, 0]
                ax.step(sf.index, sf.to_numpy(), where="post", color=_color(clrs, clr),
                        label=f"client lr {clr:g} ({int(e.sum())}/{len(e)})")  # fmt: skip
                cens = d[~e]
                if len(cens):
                    ax.plot(
                        cens,
                        kmf.survival_function_at_times(cens).to_numpy(),
                        "|",
                        color=_color(clrs, clr),
                        ms=8,
                    )
            ax.set(title=textwrap.fill(f"{sweep}, {steps} steps, master lr {mlr:g}: {stats.EVENTS[event]}", 44),
                   xlabel="episode", ylabel="fraction of runs not yet stopped", ylim=(-0.02, 1.02))  # fmt: skip
            ax.legend()
    fig.suptitle("Kaplan-Meier: runs not yet stopped (| = censored: not stopped by the run's last episode)")
    return _save(fig, out, "km_curves", _describe(runs))


def performance_profiles(runs: pd.DataFrame, store, out: Path) -> Path | None:
    """Fraction of runs whose final return exceeds tau with its 95% bootstrap band, per client lr
    (one panel per sweep and master lr), drawn by ``rliable.plot_utils``, the baselines marked."""
    from rliable import plot_utils

    from . import stats

    groups = list(runs.groupby(["sweep", "steps", "master_lr"]))
    base = store.baselines
    lo = min(runs["final_return"].min(), base["final_return"].min() if len(base) else np.inf)
    hi = max(runs["final_return"].max(), base["final_return"].max() if len(base) else -np.inf)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise NoData("no finite final return")
    taus = np.linspace(lo - 1, hi + 1, 200)
    clrs = sorted(runs["client_lr"].unique())
    fig, axes = plt.subplots(1, len(groups), figsize=(3.8 * len(groups), 3.4), squeeze=False)
    for col, ((sweep, steps, mlr), g) in enumerate(groups):
        ax = axes[0, col]
        labels = {clr: f"client lr {clr:g} ({c['final_return'].notna().sum()} runs)" for clr, c in g.groupby("client_lr")}
        scores = {labels[clr]: c["final_return"].dropna().to_numpy() for clr, c in g.groupby("client_lr")}
        profiles, cis = stats.performance_profile(scores, taus)
        colors = {label: _color(clrs, clr) for clr, label in labels.items()}
        plot_utils.plot_performance_profiles(
            profiles, taus, performance_profile_cis=cis, ax=ax, colors=colors, xlabel="final return tau",
            ylabel="fraction of runs with return > tau", labelsize="medium", ticklabelsize="small",
        )  # fmt: skip
        for k, (name, b) in enumerate(base.groupby("baseline") if len(base) else []):
            ax.axvline(float(np.median(b["final_return"])), color="0.3", ls=[":", "--"][k % 2], lw=1,
                       label=stats.BASELINE_LABELS.get(name, name))  # fmt: skip
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(textwrap.fill(f"{sweep}, {steps} steps, master lr {mlr:g}", 40))
        ax.legend()
    fig.suptitle("Performance profiles of the final return (rliable; bands: 95% stratified bootstrap)")
    return _save(fig, out, "performance_profiles", _describe(runs))


def interval_estimates(runs: pd.DataFrame, store, out: Path) -> Path | None:
    """IQM, median and mean of each cell's final returns with 95% stratified-bootstrap CIs, drawn by
    ``rliable.plot_utils.plot_interval_estimates`` (cells of fewer than 2 runs left out)."""
    from rliable import plot_utils

    from . import stats

    scores = {}
    for (sweep, algo, clr, mlr, steps), g in runs.groupby(stats.CELL, sort=True):
        label = f"{sweep}, {algo}: client lr {clr:g}, master lr {mlr:g}" + ("" if runs["steps"].nunique() == 1 else f", {steps} steps")
        scores[label] = g["final_return"].to_numpy(float)  # fmt: skip
    points, cis, names = stats.interval_estimates(scores)
    if not points:
        raise NoData("no cell has 2 or more finished runs with a final return")
    labels = list(points)
    colors = {k: OKABE_ITO[i % len(OKABE_ITO)] for i, k in enumerate(labels)}
    fig, axes = plot_utils.plot_interval_estimates(
        points, cis, names, algorithms=labels, colors=colors, xlabel="", subfigure_width=3.2, row_height=0.38
    )
    for ax in np.atleast_1d(axes):  # rliable's defaults are sized for a slide
        ax.tick_params(labelsize=8)
        ax.title.set_fontsize(9)
    fig.set_size_inches(3.2 * len(names) + 0.06 * max(map(len, labels)) + 1, 0.38 * len(labels) + 1.4)
    fig.supxlabel("final return", fontsize=9, y=0.05)
    fig.suptitle("Final return per cell: IQM, median and mean, 95% stratified-bootstrap CIs (rliable)")
    return _save(fig, out, "interval_estimates", _describe(runs))


FIGURES = [
    stop_heatmap,
    km_curves,
    performance_profiles,
    interval_estimates,
    agent_stop_distribution,
    learning_curves,
    grad_norms,
    layer_grad_norms,
    saturation_over_time,
    saturation_heatmap,
    preactivations,
    asymmetry_vs_stop,
    reward_at_stop,
    sweep_comparison,
    algorithm_comparison,
]


def make_all(runs: pd.DataFrame, store, out: Path, progress=None) -> tuple[dict[str, Path], dict[str, str]]:
    """Every figure of :data:`FIGURES` (``progress``: called with each figure's name first)."""
    out.mkdir(parents=True, exist_ok=True)
    made, skipped = {}, {}
    with plt.rc_context(STYLE):
        for fn in FIGURES:
            if progress is not None:
                progress(f"figure {fn.__name__}")
            if runs.empty:
                skipped[fn.__name__] = "no finished runs"
                continue
            try:
                p = fn(runs, store, out)
            except NoData as why:
                plt.close("all")
                skipped[fn.__name__] = str(why)
                continue
            if p is None:
                skipped[fn.__name__] = (
                    "the data it needs are absent (monitor off, no stops, or a single sweep/algorithm)"
                )
            else:
                made[fn.__name__] = p
    return made, skipped
