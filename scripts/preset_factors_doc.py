"""docs/preset_factors.md from the archive of configs/paper/preset_factors.yaml: which of the five
settings of ``published_code: 44fba1b`` (or which combination) makes the actors stop within a few
episodes, and which the all-local return.

    PYTHONPATH=src python scripts/preset_factors_doc.py results/preset_factors \
        --corners results/table1_s10 results/table1_s10_published --out docs/preset_factors.md

Every number is computed here from the archives named on the command line.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ccm_madrl.archive import ArchiveStore
from ccm_madrl.report import claims, stats

# the five settings, the value the preset gives each, and the golden-defined system's
FACTORS = {
    "cfg.agent.variant.actor_sharing": ("shared", "independent"),
    "cfg.agent.variant.actor_update": ("sequential", "simultaneous"),
    "cfg.agent.variant.actor_objective": ("selected", "proposers"),
    "cfg.agent.variant.actor_joint_states": ("next", "current"),
    "cfg.env.reset_energy_clip": ("False", "True"),
}
SHORT = {
    "cfg.agent.variant.actor_sharing": "sharing",
    "cfg.agent.variant.actor_update": "update",
    "cfg.agent.variant.actor_objective": "objective",
    "cfg.agent.variant.actor_joint_states": "joint states",
    "cfg.env.reset_energy_clip": "reset clip",
}
FAST = 10  # "stops within a few episodes": all actors stopped by this episode (the draft says ~5)
ALL_LOCAL_TOL = 0.01  # a final return within this of the all-local policy's return on the same seed


def md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(out) + "\n"


def load(path: str) -> tuple[ArchiveStore, pd.DataFrame]:
    store = ArchiveStore([path])
    r = store.runs.copy()
    for c in FACTORS:
        r[c] = r[c].astype(str)
    base = store.baselines
    local = {}  # (seed, reset clip) -> the all-local policy's return (the clip changes the system)
    for b in base[base["baseline"] == "all_local"].itertuples() if len(base) else []:
        setting = json.loads(b.setting)
        local[(int(b.seed), str(bool(setting["env"]["reset_energy_clip"])))] = float(b.final_return)
    r["all_local"] = [
        bool(abs(f - local.get((int(s), c), np.nan)) <= ALL_LOCAL_TOL) if np.isfinite(f) else False
        for f, s, c in zip(r["final_return"], r["cfg.seed"], r["cfg.env.reset_energy_clip"])
    ]
    r["fast"] = r["all_actors_stop_thr"] <= FAST
    return store, r


def label(row: pd.Series) -> str:
    return ", ".join(row[c] for c in FACTORS)


def config_table(r: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for key, g in r.groupby(list(FACTORS), sort=False):
        n_pre = sum(v == FACTORS[c][0] for c, v in zip(FACTORS, key))
        rows.append({**{SHORT[c]: v for c, v in zip(FACTORS, key)},
                     "preset's settings": f"{n_pre}/5",
                     "runs": len(g),
                     "all actors stop (per seed)": ", ".join("-" if not np.isfinite(v) else f"{v:g}" for v in g["all_actors_stop_thr"]),
                     "gradient exactly 0 (per seed)": ", ".join("-" if not np.isfinite(v) else f"{v:g}" for v in g["all_actors_grad_zero"]),
                     "critic stop": f"{int(g['critic_stop_thr'].notna().sum())}/{len(g)}",
                     "final return (per seed)": ", ".join(f"{v:.1f}" for v in g["final_return"]),
                     "at the all-local return": f"{int(g['all_local'].sum())}/{len(g)}"})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["preset's settings"], ascending=False, kind="stable")


def separating_rules(r: pd.DataFrame, outcome: str, max_terms: int = 3) -> list[str]:
    """The smallest conjunctions of settings (value as in the preset or as in the golden system) that
    hold for exactly the configs where ``outcome`` holds in every seed, and fail for exactly those
    where it holds in no seed (configs where it holds in some seeds only are reported, not fitted)."""
    per = r.groupby(list(FACTORS), sort=False)[outcome].agg(["all", "any"])
    yes = per[per["all"]].index
    no = per[~per["any"]].index
    if not len(yes) or not len(no):
        return []
    found: list[str] = []
    for k in range(1, max_terms + 1):
        for cols in itertools.combinations(range(len(FACTORS)), k):
            for values in itertools.product(*(FACTORS[list(FACTORS)[i]] for i in cols)):

                def holds(key, cols=cols, values=values):
                    return all(key[i] == v for i, v in zip(cols, values))

                if all(holds(key) for key in yes) and not any(holds(key) for key in no):
                    found.append(
                        " and ".join(f"{SHORT[list(FACTORS)[i]]} = {v}" for i, v in zip(cols, values))
                    )
        if found:
            return found
    return found


def main_effects(r: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Per setting: runs at the preset's value vs the golden system's, over all the other settings
    (a balanced 2^5 design): the all-actors stop (log-rank, hazard ratio; the claim rules of
    ``report.claims``, Holm over the settings that vary), the fraction that stop within FAST
    episodes, and the final return (probability of improvement with its CI)."""
    rows, comps = [], []
    for c, (pre, gold) in FACTORS.items():
        a, b = r[r[c] == pre], r[r[c] == gold]
        if a.empty or b.empty:
            continue
        comps.append(claims.compare_stops(a, b, "all_actors_stop_thr"))
        poi = stats.probability_of_improvement(a["final_return"].to_numpy(), b["final_return"].to_numpy())
        rows.append({"setting": SHORT[c], "preset's value": pre, "golden system's": gold,
                     "runs": f"{len(a)} vs {len(b)}",
                     "all actors stop, KM median (preset's / golden)":
                         f"{stats.fmt_km(stats.km_median(*stats.survival_data(a, 'all_actors_stop_thr')))} / "
                         f"{stats.fmt_km(stats.km_median(*stats.survival_data(b, 'all_actors_stop_thr')))}",
                     f"stop by episode {FAST}": f"{int(a['fast'].sum())}/{len(a)} vs {int(b['fast'].sum())}/{len(b)}",
                     "P(preset's value's return > golden's) [95% CI]": f"{poi['poi']:.2f} [{poi['ci_low']:.2f}, {poi['ci_high']:.2f}]"})  # fmt: skip
    out = pd.DataFrame(rows)
    if len(out):
        verdicts = claims.family(comps, names=[("preset's value", "golden system's")] * len(comps))
        out["all-actors stop: verdict"] = [v.text for v in verdicts]
    return out, len(comps)


def corner_check(r: pd.DataFrame, store: ArchiveStore, corner_paths: list[str]) -> list[str]:
    """The two corners (the preset's five settings; the golden system's) against the Table 1 runs at
    the same cell and seed: their first episodes must agree (a pack and another commit move float32
    sums, so the returns agree to ~1e-6 and may part after a near-tie)."""
    out = []
    for path in corner_paths:
        t_store = ArchiveStore([path])
        t = t_store.runs
        preset = (
            bool(t["cfg.published_code"].astype(str).eq("44fba1b").any())
            if "cfg.published_code" in t
            else False
        )
        want = {c: v[0] if preset else v[1] for c, v in FACTORS.items()}
        corner = r[np.all([r[c] == v for c, v in want.items()], axis=0)]
        for _, row in corner.iterrows():
            same = t[(t["cfg.seed"] == row["cfg.seed"]) & (t["cfg.agent.actor_lr"] == row["cfg.agent.actor_lr"])
                     & (t["cfg.agent.critic_lr"] == row["cfg.agent.critic_lr"])]  # fmt: skip
            if same.empty:
                continue
            m1 = store.metrics[store.metrics["run_id"] == row["run_id"]].set_index("episode")["eval_return"]
            m2 = t_store.metrics[t_store.metrics["run_id"] == same["run_id"].iloc[0]].set_index("episode")[
                "eval_return"
            ]
            idx = m1.index.intersection(m2.index)
            a, b = m1.loc[idx].to_numpy(float), m2.loc[idx].to_numpy(float)
            ok = np.isfinite(a) & np.isfinite(b)
            rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-30)
            beyond = np.flatnonzero(ok & (rel > 1e-6))
            out.append(f"the {'preset' if preset else 'golden system'}'s corner, seed {int(row['cfg.seed'])}, against "
                       f"`{path}` run {same['run_id'].iloc[0]}: evaluation returns of episodes {idx.min()}-{idx.max()} "
                       + (f"agree to 1e-6 relative (max {np.nanmax(rel[ok]):.1e})" if not len(beyond) else
                          f"agree to 1e-6 up to episode {idx[beyond[0]] - 1} (max relative difference there "
                          f"{np.max(rel[: beyond[0]][ok[: beyond[0]]], initial=0):.1e}), then part"))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive")
    ap.add_argument("--corners", nargs="*", default=[], help="Table 1 archives to check the corners against")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    store, r = load(a.archive)
    cmd = f"PYTHONPATH=src python scripts/preset_factors_doc.py {a.archive}" + (
        f" --corners {' '.join(a.corners)}" if a.corners else "") + f" --out {a.out}"  # fmt: skip
    seeds = sorted(int(s) for s in r["cfg.seed"].unique())
    n_cfg = r.groupby(list(FACTORS)).ngroups
    cells = sorted({(float(x), float(y)) for x, y in zip(r["cfg.agent.actor_lr"], r["cfg.agent.critic_lr"])})
    parts = [
        "# The published-code preset decomposed\n",
        f"Generated by `{cmd}` from `{a.archive}` ({len(r)} runs: {n_cfg} of the 32 configs of "
        f"`configs/paper/preset_factors.yaml`, seeds {seeds}, client / master lr "
        + ", ".join(f"{x:g} / {y:g}" for x, y in cells)
        + f", {int(r['episodes_done'].max())} episodes on the 2000-episode exploration schedule).\n",
        "`published_code: 44fba1b` changes five settings of the system the golden files define: one actor "
        "shared by all clients (sharing), the actor loss's maximum over the master's stored selection "
        "(objective = selected), the next joint states fed to the critic in the actor loss (joint states = "
        "next), no battery clip at reset (reset clip = False), with the sequential update (update; a shared "
        "network stepped N = 50 times per training step). Each config below sets each of them to the "
        "preset's value or the golden system's. 'all actors stop': the episode from which every actor's "
        "largest |weight change| stayed below 1e-8 (- : not by the last episode, censored); 'gradient "
        "exactly 0': every actor's output gradient exactly zero; final return: the mean evaluation return "
        "of the last 100 episodes (`ccm_madrl.rundir.final_return`); 'at the all-local return': within "
        f"{ALL_LOCAL_TOL} of the return of the policy that offloads nothing, on the same seed's evaluation episodes "
        "and reset clip (`baselines.parquet`).\n",
        "## Per config\n",
        md(config_table(r)),
    ]
    for outcome, what in (
        ("fast", f"all actors stopped by episode {FAST}"),
        ("all_local", "final return at the all-local policy's"),
    ):
        rules = separating_rules(r, outcome)
        per = r.groupby(list(FACTORS), sort=False)[outcome].agg(["all", "any"])
        mixed = int((per["any"] & ~per["all"]).sum())
        n_yes = int(per["all"].sum())
        text = (
            f"**{what}**: in every seed of {n_yes} of {len(per)} configs"
            + (f", in some seeds only of {mixed}" if mixed else "")
            + ". "
        )
        if not n_yes:
            text += "No config has it in every seed."
        elif rules:
            text += (
                "The smallest rules over the five settings that hold for exactly those configs and for none "
                "of the configs without it: " + "; ".join(f"*{x}*" for x in rules) + "."
            )
        else:
            text += "No conjunction of up to three settings separates those configs from the others."
        parts.append(text + "\n")
    eff, m = main_effects(r)
    parts += ["## Each setting's main effect\n",
              f"Runs at the preset's value against runs at the golden system's, pooled over the other four settings "
              f"(a balanced design while all 32 configs are in); log-rank test on the all-actors stop, Holm over the "
              f"{m} settings; the probability of improvement of the final return with its bootstrap CI beside it. "
              "A main effect averages over the other settings: an interaction (the rules above) can hide in it.\n",
              md(eff)]  # fmt: skip
    checks = corner_check(r, store, a.corners)
    if checks:
        parts += ["## The corners against Table 1\n",
                  "Each run here is the first episodes of a 2000-episode config; the two corners are the Table 1 "
                  "configs at the same cell: " + "; ".join(checks) + ".\n"]  # fmt: skip
    Path(a.out).write_text("\n".join(parts))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
