"""Compact results of the cross-domain sweeps (docs/cross_domain.md): one row per run and one per
cell (sweep x env x algo x actor lr x reward scale x optimiser, over seeds), from the run store.

    python scripts/cross_summary.py sweeps/cross_pendulum [more sweep dirs] --out benchmarks/results/cross

Per run (``runs.csv``), from the monitor's rows of the actor and critic roles: the measured
gradient steps (one row per measured unit: every 5th rollout, each one gradient step at SB3's
defaults; BenchMARL: every 5th gradient step), the first unit and env step at which the actor's
gradient was exactly 0 (``actor_grad0_first``, ``actor_grad0_first_t``), the unit from which it
stayed 0 (rows from the first non-finite weight or gradient on are left out: ``diverged_t`` is the
env step of that unit) (``actor_grad_zero``: NaN if it did not), the fraction of measured actor steps with an
exactly zero gradient, the actor's weights stopped for good (exact / 1e-8), the mean over the last
``--tail`` measured actor steps of the exact-saturation fraction, |out| > 0.9 and the cause
attribution, whether the critic's weights changed in every one of its last ``--tail`` measured
steps, the mean batch |reward| and effective lr (lr x |reward|), and the final evaluation return.
``cells.csv`` / ``cells.md``: counts and means over the seeds of each cell; ``results.md`` and
``reward_scale.md``: the two tables of docs/cross_domain.md (sweeps with one reward scale, and the
reward-scale sweeps).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ccm_madrl.monitor.stops import agent_stops
from ccm_madrl.store import load

CELL = ["sweep", "env", "algo", "total_steps", "actor_lr", "critic_lr", "reward_scale", "optimizer"]


def _t(rows: pd.DataFrame, unit: float) -> float:
    """The env step (``timesteps``) recorded with a measured unit."""
    t = rows.loc[rows["episode"] == unit, "timesteps"]
    return float(t.iloc[0]) if len(t) else np.nan


def run_rows(sweep_dir: Path, tail: int) -> list[dict]:
    s = load(sweep_dir)
    out = []
    for _, run in s.runs.iterrows():
        if run["status"] != "done":
            continue
        rid = run["run_id"]
        mon = s.monitor[s.monitor["run_id"] == rid] if len(s.monitor) else pd.DataFrame()
        met = s.metrics[s.metrics["run_id"] == rid] if len(s.metrics) else pd.DataFrame()
        diverged = np.nan
        if len(mon):
            bad = ~np.isfinite(mon["weight_l2"].to_numpy(float)) | ~np.isfinite(
                mon["grad_norm"].to_numpy(float)
            )
            if bad.any():  # a diverged network: later rows are not measurements of stopping
                first = mon["episode"].to_numpy()[bad].min()
                diverged = float(mon.loc[mon["episode"] == first, "timesteps"].iloc[0])
                mon = mon[mon["episode"] < first]
        act = mon[mon["is_actor"].astype(bool)].sort_values("episode") if len(mon) else mon
        cri = mon[~mon["is_actor"].astype(bool)].sort_values("episode") if len(mon) else mon
        zero = act["grad_norm"].to_numpy() == 0 if len(act) else np.zeros(0, bool)
        st = agent_stops(mon) if len(mon) else pd.DataFrame()
        sa = st[st["is_actor"].astype(bool)] if len(st) else st
        last = act.tail(tail)

        def latest(col: str, sa: pd.DataFrame = sa) -> float:  # the actors' event, if all had it
            return float(sa[col].max()) if len(sa) and sa[col].notna().all() else np.nan

        ev = met["eval_return"].dropna() if "eval_return" in met else pd.Series(dtype=float)
        tr = met["train_return"].dropna() if "train_return" in met else pd.Series(dtype=float)
        row = {
            "sweep": Path(sweep_dir).name,
            "run_id": rid,
            "env": run["cfg.cross.env"],
            "algo": run["cfg.cross.algo"],
            "actor_lr": run["cfg.cross.actor_lr"],
            "critic_lr": float(cri["lr"].iloc[0]) if len(cri) and "lr" in cri else np.nan,
            "reward_scale": run["cfg.cross.reward_scale"],
            "optimizer": run["cfg.cross.optimizer"],
            "seed": run["cfg.seed"],
            "total_steps": run["cfg.cross.total_steps"],
            "actor_rows": len(act),
            "diverged_t": diverged,
            "actor_grad0_first": float(act["episode"].to_numpy()[zero][0]) if zero.any() else np.nan,
            "actor_grad0_first_t": float(act["timesteps"].to_numpy()[zero][0]) if zero.any() else np.nan,
            "actor_grad0_frac": float(zero.mean()) if len(zero) else np.nan,
            "actor_grad_zero": latest("grad_zero"),
            "actor_stop_exact": latest("stop_exact"),
            "actor_stop_thr": latest("stop_thr"),
            "actor_stop_exact_t": _t(act, latest("stop_exact")),
            "last_units": f"{int(last['episode'].min())}-{int(last['episode'].max())}" if len(last) else "",
            "actor_grad_norm_end": float(last["grad_norm"].mean()) if len(last) else np.nan,
            "sat_exact_end": float(last["frac_sat_exact"].mean()) if "frac_sat_exact" in last else np.nan,
            "out_gt09_end": float(last["frac_out_gt09"].mean()) if "frac_out_gt09" in last else np.nan,
            "frac_saturated_end": float(last["frac_saturated"].mean())
            if "frac_saturated" in last
            else np.nan,
            "frac_no_path_end": float(last["frac_no_path"].mean()) if "frac_no_path" in last else np.nan,
            "frac_dead_end": float(last["frac_dead"].mean()) if "frac_dead" in last else np.nan,
            "frac_flowing_end": float(last["frac_flowing"].mean()) if "frac_flowing" in last else np.nan,
            "critic_changed_end": bool(cri.tail(tail)["changed"].all()) if len(cri) else False,
            "critic_grad_norm_end": float(cri.tail(tail)["grad_norm"].mean()) if len(cri) else np.nan,
            "reward_abs": float(act["reward_abs"].mean()) if len(act) else np.nan,
            "effective_actor_lr": float(act["effective_lr"].mean()) if len(act) else np.nan,
            "train_return_last": float(tr.tail(3).mean()) if len(tr) else np.nan,
            "eval_return_final": float(ev.iloc[-1]) if len(ev) else np.nan,
        }
        out.append(row)
    return out


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    g = runs.groupby(CELL, sort=True, dropna=False)
    return g.agg(
        seeds=("seed", "count"),
        diverged_seeds=("diverged_t", lambda x: int(x.notna().sum())),
        grad0_seeds=("actor_grad0_first", lambda x: int(x.notna().sum())),
        grad0_first_t_median=("actor_grad0_first_t", "median"),
        grad_zero_for_good_seeds=("actor_grad_zero", lambda x: int(x.notna().sum())),
        stop_exact_seeds=("actor_stop_exact", lambda x: int(x.notna().sum())),
        stop_exact_t_median=("actor_stop_exact_t", "median"),
        grad0_frac=("actor_grad0_frac", "mean"),
        sat_exact_end=("sat_exact_end", "mean"),
        frac_saturated_end=("frac_saturated_end", "mean"),
        frac_no_path_end=("frac_no_path_end", "mean"),
        frac_dead_end=("frac_dead_end", "mean"),
        critic_changed_seeds=("critic_changed_end", "sum"),
        reward_abs=("reward_abs", "mean"),
        effective_actor_lr=("effective_actor_lr", "mean"),
        eval_return_mean=("eval_return_final", "mean"),
        eval_return_sd=("eval_return_final", "std"),
        eval_n=("eval_return_final", "count"),
    ).reset_index()


def _ret(r) -> str:
    """Final evaluation return, mean ± sd over the seeds that have one."""
    if r.eval_n == 0:
        return "none (diverged)"
    sd = f" ± {r.eval_return_sd:.1f}" if r.eval_n > 1 else ""
    return f"{r.eval_return_mean:.1f}{sd}" + (f" (n={r.eval_n})" if r.eval_n < r.seeds else "")


def _k_of_n(k, n, t=np.nan) -> str:
    return f"{k}/{n}" + (f" (t={t:.0f})" if k and np.isfinite(t) else "")


def _table(c: pd.DataFrame, cols: dict) -> str:
    """A Markdown table: one row per cell, one column per (header, function of the cell)."""
    return to_md(pd.DataFrame([{h: f(r) for h, f in cols.items()} for r in c.itertuples(index=False)]))


TAIL_COLS = {
    "sat": lambda r: f"{r.sat_exact_end:.2f}",
    "critic moving": lambda r: f"{int(r.critic_changed_seeds)}/{r.seeds}",
    "return": _ret,
}


def doc_table(c: pd.DataFrame) -> str:
    """The results table of docs/cross_domain.md."""
    return _table(c, {
        "env": lambda r: r.env,
        "algo": lambda r: r.algo,
        "steps": lambda r: r.total_steps,
        "actor lr": lambda r: f"{r.actor_lr:g}",
        "grad = 0": lambda r: _k_of_n(r.grad0_seeds, r.seeds, r.grad0_first_t_median),
        "stopped": lambda r: _k_of_n(r.stop_exact_seeds, r.seeds, r.stop_exact_t_median),
        **TAIL_COLS,
    })  # fmt: skip


def reward_table(c: pd.DataFrame) -> str:
    """The reward-scale table of docs/cross_domain.md (the sweeps with more than one reward scale)."""
    return _table(c, {
        "sweep": lambda r: r.sweep,
        "optimizer": lambda r: r.optimizer,
        "steps": lambda r: r.total_steps,
        "reward x": lambda r: f"{r.reward_scale:g}",
        "batch abs(r)": lambda r: f"{r.reward_abs:.3g}",
        "lr x abs(r)": lambda r: f"{r.effective_actor_lr:.3g}",
        "grad = 0": lambda r: _k_of_n(r.grad0_seeds, r.seeds),
        "diverged": lambda r: f"{r.diverged_seeds}/{r.seeds}",
        **TAIL_COLS,
    })  # fmt: skip


def to_md(df: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--out", default="benchmarks/results/cross")
    ap.add_argument("--tail", type=int, default=20, help="measured steps at the end to average")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = pd.DataFrame([r for d in a.dirs for r in run_rows(Path(d), a.tail)])
    runs.to_csv(out / "runs.csv", index=False)
    c = cells(runs)
    c.to_csv(out / "cells.csv", index=False)
    (out / "cells.md").write_text(to_md(c))
    scaled = c.groupby("sweep")["reward_scale"].transform("nunique") > 1  # the reward-scale sweeps
    (out / "results.md").write_text(doc_table(c[~scaled]))
    (out / "reward_scale.md").write_text(reward_table(c[scaled]))
    print(f"{len(runs)} runs, {len(c)} cells -> {out}")


if __name__ == "__main__":
    main()
