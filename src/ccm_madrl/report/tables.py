"""The report's tables, computed from a :class:`ccm_madrl.store.Store`.

Table 1 — per (sweep, algorithm, client lr, master lr, steps per episode): actors-stop episode
(exact and thresholded criteria), critic-stop episode, the episode the actors' gradients vanished for
good, final evaluation return (mean of the last 100 evaluations), each as mean +- 95% confidence
interval over seeds (Student t: mean +- t(0.975, n-1) s / sqrt(n); stop episodes over the seeds in
which the event happened, with their count), the number of seeds, and the fraction of seeds in which
all actors stopped. Only finished runs count.

Table 2 — architecture, computed from the instantiated networks of every distinct configuration.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

GROUP = ["sweep", "algorithm", "client_lr", "master_lr", "steps"]
ACTOR_LOSS = {
    "ccm_madrl": "deterministic policy gradient through the master's max-Q over proposers: -mean_b w_b max_j Q(S, U, s_j, u_j)",
    "maddpg": "deterministic policy gradient through the joint critic: -mean_b w_b Q(S, U)",
}
CRITIC_LOSS = {
    "ccm_madrl": "importance-weighted squared TD error over selected (or fake) rows",
    "maddpg": "importance-weighted squared TD error, one row per sample",
}


def t_quantile(df: int) -> float:
    """Student's t(0.975, df): the two-sided 95% quantile (scipy), for any df >= 1."""
    return float(student_t.ppf(0.975, df))


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% CI, n) over the finite values; half-width NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, 1
    return float(x.mean()), float(t_quantile(n - 1) * x.std(ddof=1) / math.sqrt(n)), n


def fmt_ci(mean: float, half: float, n: int, total: int | None = None, digits: int = 1) -> str:
    if n == 0:
        return "never" if total else "n/a"
    s = f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if np.isfinite(half) else "")
    return s + (f" ({n}/{total})" if total is not None and n != total else "")


GRID = {
    "cfg.seed",
    "cfg.name",
    "cfg.agent.actor_lr",
    "cfg.agent.critic_lr",
    "cfg.env.max_steps",
    "cfg.agent.algorithm",
    "cfg.cross.algo",
    "cfg.cross.actor_lr",
    "cfg.cross.critic_lr",
    "cfg.cross.env",
}


def runs_frame(store) -> pd.DataFrame:
    """The runs with the grouping columns of the tables. Config fields that vary within a sweep
    besides the grid (e.g. the actor update order, an activation, a coefficient) make variants: the
    run's ``sweep`` label becomes ``<sweep> [field=value, ...]`` so tables and figures split them."""
    r = store.runs.copy()
    if r.empty:
        return r
    r["sweep_dir"] = r["sweep"]
    for sweep, g in r.groupby("sweep"):
        varying = [
            c for c in g.columns if c.startswith("cfg.") and c not in GRID and g[c].astype(str).nunique() > 1
        ]
        if varying:
            labels = (
                g[varying]
                .astype(str)
                .apply(lambda row: ", ".join(f"{c[4:]}={v}" for c, v in row.items()), axis=1)
            )
            r.loc[g.index, "sweep"] = sweep + " [" + labels + "]"

    def col(name: str) -> pd.Series:
        return r[name] if name in r else pd.Series(np.nan, index=r.index)

    r["algorithm"] = r.get("cfg.agent.algorithm", "ccm_madrl")
    r["client_lr"] = col("cfg.agent.actor_lr")
    r["master_lr"] = col("cfg.agent.critic_lr")
    r["steps"] = col("cfg.env.max_steps")
    if "cfg.cross.algo" in r:  # kind: cross (another library's agent): its algorithm, lrs and env
        from ..config.cross import DEFAULT_CRITIC_LR

        x = r["cfg.kind"] == "cross"
        critic_lr = pd.to_numeric(r["cfg.cross.critic_lr"], errors="coerce")
        r["algorithm"] = r["algorithm"].where(~x, r["cfg.cross.algo"])
        r["client_lr"] = r["client_lr"].where(~x, r["cfg.cross.actor_lr"])
        r["master_lr"] = r["master_lr"].where(
            ~x, critic_lr.fillna(r["cfg.cross.algo"].map(DEFAULT_CRITIC_LR))
        )
        r["steps"] = r["steps"].astype(object).where(~x, r["cfg.cross.env"])
    return r


def table1(store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 as (numbers for CSV, formatted strings for Markdown): per cell, over its runs that
    finished (``seeds``); ``diverged`` counts the cell's runs whose training diverged, which have no
    final return and are not in the other columns."""
    r = runs_frame(store)
    r = r[r["status"].isin(("done", "diverged"))] if len(r) else r
    nums, text = [], []
    for key, cell in r.groupby(GROUP, sort=True) if len(r) else []:
        g = cell[cell["status"] == "done"]
        n = len(g)
        row = dict(zip(GROUP, key))
        row["seeds"] = n
        row["diverged"] = len(cell) - n
        t = dict(row)
        for col, label in (
            ("all_actors_stop_exact", "actors_stop_exact"),
            ("all_actors_stop_thr", "actors_stop_thr"),
            ("critic_stop_exact", "critic_stop_exact"),
            ("critic_stop_thr", "critic_stop_thr"),
            ("all_actors_grad_zero", "actors_grad_zero"),
        ):
            vals = g[col] if col in g else pd.Series([np.nan] * n)
            m, h, k = mean_ci(vals)
            row.update({f"{label}_mean": m, f"{label}_ci95": h, f"{label}_n": k})
            t[label] = fmt_ci(m, h, k, total=n, digits=0)
        m, h, k = mean_ci(g["final_return"])
        row.update(final_return_mean=m, final_return_ci95=h, final_return_n=k)
        t["final_return"] = fmt_ci(m, h, k)
        for crit in ("exact", "thr"):
            col = f"all_actors_stop_{crit}"
            frac = float(g[col].notna().mean()) if col in g else math.nan
            row[f"frac_seeds_all_actors_stopped_{crit}"] = frac
            t[f"all stopped ({crit})"] = "n/a" if math.isnan(frac) else f"{frac:.0%}"
        nums.append(row)
        text.append(t)
    return pd.DataFrame(nums), pd.DataFrame(text)


def algorithm_table(store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Final return and constraint-violation rate (mean of the last 100 evaluations) per algorithm."""
    r = runs_frame(store)
    r = r[r["status"] == "done"] if len(r) else r
    nums, text = [], []
    for (sweep, algo), g in r.groupby(["sweep", "algorithm"], sort=True) if len(r) else []:
        m, h, k = mean_ci(g["final_return"])
        cm, ch, ck = mean_ci(g["final_constraint_frac"])
        nums.append({"sweep": sweep, "algorithm": algo, "seeds": len(g), "final_return_mean": m, "final_return_ci95": h,
                     "constraint_violation_mean": cm, "constraint_violation_ci95": ch})  # fmt: skip
        text.append({"sweep": sweep, "algorithm": algo, "seeds": len(g), "final return": fmt_ci(m, h, k),
                     "constraint violation (fraction of steps)": fmt_ci(cm, ch, ck, digits=3)})  # fmt: skip
    return pd.DataFrame(nums), pd.DataFrame(text)


NO_DESCRIPTION = (
    "the run has no learner.json (written before 0.2.0); scripts/describe_learners.py RUN_OR_SWEEP_DIR writes it"
)


def table2(store) -> pd.DataFrame:
    """Architecture comparison of every distinct network configuration among the runs, from the
    description each run wrote (``learner.json``); a run from before 0.2.0 has none: one row says
    so (the report builds no learner; ``scripts/describe_learners.py`` writes the description)."""
    from ..config.experiment import stored_config

    rows, seen = [], set()
    for raw, learner in store.descriptions():
        cfg = stored_config(raw)
        if cfg.kind == "cross":  # another library's networks (its defaults; docs/cross_domain.md)
            continue
        a = cfg.agent
        arch, mit, v = a.architecture, a.mitigations, a.variant
        key = (
            a.algorithm,
            arch.actor_hidden,
            arch.critic_hidden,
            arch.activation,
            mit.actor_layernorm,
            mit.actor_reg == "entropy",
            mit.input_norm,
            v.actor_sharing,
            v.actor_objective,
            v.actor_joint_states,
            cfg.env.n_agents,
        )
        if key in seen:
            continue
        seen.add(key)
        if not learner and ":" in a.algorithm:  # a stored config's 'module:factory': never imported here
            rows.append({"algorithm": a.algorithm, "role": "learner named by module (no learner.json; not imported)", "inputs": "-",
                         "hidden": "-", "output": "-", "parameters (one network)": 0, "parameters (all)": 0, "loss": "-"})  # fmt: skip
            continue
        if not learner:  # a run from before 0.2.0: the training side writes its description
            rows.append({"algorithm": a.algorithm, "role": f"not recorded: {NO_DESCRIPTION}", "inputs": "-",
                         "hidden": "-", "output": "-", "parameters (one network)": 0, "parameters (all)": 0, "loss": "-"})  # fmt: skip
            continue
        desc = learner
        if "actors" not in desc:
            rows.append({"algorithm": a.algorithm, "role": "fixed policy (no networks)", "inputs": "-", "hidden": "-", "output": "-",
                         "parameters (one network)": 0, "parameters (all)": 0, "loss": "-"})  # fmt: skip
            continue
        rows += _architecture_rows(a, desc["actors"], desc["critic"])
    return pd.DataFrame(rows)


def _architecture_rows(a, actors: dict, c: dict) -> list[dict]:
    family = "ccm_madrl" if a.algorithm == "ccm_madrl" else "maddpg"
    v, mit = a.variant, a.mitigations
    n, hidden = c["n_agents"], actors["layers"][1:-1]
    out = (
        actors["output_activation"]
        + (" (squashed Gaussian: mean and log-std)" if actors["stochastic"] else "")
        + (", LayerNorm before it" if actors["layernorm"] else "")
    )
    actor_row = {
        "algorithm": a.algorithm, "role": "client actor (one network shared by N)" if actors["shared"] else "client actor (x N)", "inputs": f"own state ({actors['state_dim']})" + (", scaled to [0, 1]" if mit.input_norm else ""),
        "hidden": " -> ".join(map(str, hidden)) + " (ReLU)", "output": f"{actors['layers'][-1]} ({out})",
        "parameters (one network)": actors["parameters_per_network"], "parameters (all)": actors["parameters"], "loss": ACTOR_LOSS[family]
        + (" (max over the stored selection)" if v.actor_objective == "selected" else "")
        + (" (critic fed the next joint states)" if v.actor_joint_states == "next" else "")
        + (f" + {mit.actor_reg_coef:g} x " + ("log pi" if mit.actor_reg == "entropy" else "mean z^2") if mit.actor_reg != "none" else ""),
    }  # fmt: skip
    sd, ad, per_agent = c["state_dim"], c["action_dim"], c["per_agent_input"]
    ins = f"joint states ({n}x{sd}) + joint actions ({n}x{ad})" + (
        f" + own state ({sd}) + own action ({ad})" if per_agent else ""
    )
    critic_row = {
        "algorithm": a.algorithm, "role": "master critic (x 1)" if per_agent else "centralised critic (x 1)",
        "inputs": f"{c['layers'][0]}: {ins}", "hidden": " -> ".join(map(str, c["layers"][1:-1])) + " (ReLU)", "output": "1 (linear)",
        "parameters (one network)": c["parameters"], "parameters (all)": c["parameters"], "loss": CRITIC_LOSS[family],
    }  # fmt: skip
    return [actor_row, critic_row]
