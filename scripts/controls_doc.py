"""docs/controls.md: the screen of the two controls of the draft's causal story against the baseline,
from archived runs only.

Run: PYTHONPATH=src python scripts/controls_doc.py results/screen_baseline \
         results/screen_control_linear_clip_actor results/screen_control_bounded_critic --out docs/controls.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from table1_doc import md, monitor_facts  # noqa: E402

from ccm_madrl.archive import ArchiveStore  # noqa: E402
from ccm_madrl.report import stats  # noqa: E402
from ccm_madrl.report.tables import runs_frame  # noqa: E402

LABEL = {
    "screen_baseline": "baseline: tanh actors, linear critic (published)",
    "screen_control_linear_clip_actor": "actors: linear output clipped to [-1, 1], identity gradient",
    "screen_control_bounded_critic": "critic: bounded output 400 tanh(q / 400)",
    "screen_control_bounded_critic_100": "critic: bounded output 100 tanh(q / 100)",
}
EVENTS = (("all actors stop (thr)", "all_actors_stop_thr"), ("gradient exactly 0", "all_actors_grad_zero"),
          ("critic stop (thr)", "critic_stop_thr"))  # fmt: skip


ATTRIBUTION = (
    ("flowing", "frac_flowing_mean"),
    ("saturated", "frac_saturated_mean"),
    ("no path", "frac_no_path_mean"),
)


def attribution(store: ArchiveStore) -> pd.DataFrame:
    """Per run: the monitor's cause attribution of the actors' output gradients (fractions flowing /
    zero by a saturated output / zero with no path from the loss), mean of the last 20 episodes."""
    m = store.table("monitor_summary", ["episode", "is_actor", *(c for _, c in ATTRIBUTION)])
    a = m[m["is_actor"].astype(bool)]
    return (
        a.sort_values("episode")
        .groupby("run_id")
        .tail(20)
        .groupby("run_id")[[c for _, c in ATTRIBUTION]]
        .mean()
    )


def cell_rows(store: ArchiveStore) -> pd.DataFrame:
    runs = runs_frame(store)
    facts = monitor_facts(store, runs).set_index("run_id")
    causes = attribution(store)
    rows = []
    for (sweep, lr), g in runs.groupby(["sweep_dir", "client_lr"]):
        row = {"variant": LABEL.get(sweep, sweep), "client lr": f"{lr:g}", "runs": len(g)}
        for title, event in EVENTS:
            row[title] = stats.fmt_km(stats.km_median(*stats.survival_data(g, event)))
        row["IQM final return [95% CI]"] = stats.fmt_iqm(stats.iqm_ci(g["final_return"].to_numpy(float)))
        f = facts.reindex(g["run_id"])
        row["|out| > 0.9 (last 20)"] = f"{np.nanmean(f['out_gt09_final']):.2f}"
        row["exactly saturated (last 20)"] = f"{np.nanmean(f['sat_exact_final']):.2f}"
        row["largest |z|"] = f"{np.nanmax(f['z_absmax']):.3g}"
        c = causes.reindex(g["run_id"])
        row["gradient: flowing / saturated / no path (last 20)"] = " / ".join(
            f"{np.nanmean(c[col]):.2f}" for _, col in ATTRIBUTION
        )
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons(store: ArchiveStore) -> pd.DataFrame:
    """Each control against the baseline, per client lr: the actors' stop (log-rank on the
    all-actors-stop episodes, runs that never stop censored) and the final return (probability of
    improvement with its Mann-Whitney p); Holm over the table's whole family of tests."""
    runs = runs_frame(store)
    base = runs[runs["sweep_dir"] == "screen_baseline"]
    rows = []
    for sweep, g in runs[runs["sweep_dir"] != "screen_baseline"].groupby("sweep_dir"):
        for lr, cell in g.groupby("client_lr"):
            b = base[base["client_lr"] == lr]
            lrk = stats.logrank(cell, b, "all_actors_stop_thr")
            poi = stats.probability_of_improvement(cell["final_return"], b["final_return"])
            rows.append({"variant": LABEL.get(sweep, sweep), "client lr": f"{lr:g}", "n": f"{len(cell)} vs {len(b)}",
                         "_p_stop": lrk["p"], "_p_ret": poi["p"],
                         "P(control return > baseline) [CI]": f"{poi['poi']:.2f} [{poi['ci_low']:.2f}, {poi['ci_high']:.2f}]"})  # fmt: skip
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    family = pd.concat([t["_p_stop"], t["_p_ret"]], ignore_index=True)
    adj = stats.holm(family)
    t["actors' stop vs baseline (log-rank)"] = [
        stats.verdict(p, *map(int, n.split(" vs ")), "differs") for p, n in zip(adj[: len(t)], t["n"])
    ]
    t["final return vs baseline (Mann-Whitney)"] = [
        stats.verdict(p, *map(int, n.split(" vs ")), "differs") for p, n in zip(adj[len(t) :], t["n"])
    ]
    return t.drop(columns=["_p_stop", "_p_ret"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("archives", nargs="+")
    ap.add_argument("--out", default=str(ROOT / "docs" / "controls.md"))
    a = ap.parse_args()
    store = ArchiveStore(a.archives)
    table = cell_rows(store)
    runs = runs_frame(store)
    n_ep = sorted(int(x) for x in runs["episodes_done"].unique())
    seeds = "; ".join(
        f"{sweep}: {', '.join(str(int(x)) for x in sorted(g['cfg.seed'].unique()))}"
        for sweep, g in runs.groupby("sweep_dir")
    )
    cmd = "PYTHONPATH=src python scripts/controls_doc.py " + " ".join(a.archives) + f" --out {a.out}"
    text = [
        "# The two controls of the causal story (a screen)\n",
        f'Generated by `{cmd}` from the archives named (`docs/run_store.md`, "The archive"); every number '
        "comes from those files. The draft blames the actors' stop on tanh saturation. Two controls remove "
        "one link each: actors whose output is linear (clipped to the action bounds in value, with the "
        "identity's gradient: `agent.architecture.activation: linear_clip`), and a critic whose output is "
        "bounded (`agent.architecture.critic_output: tanh_scaled`; the config's bounds are 400 and 100, run "
        'here one at a time: `--axis "agent.architecture.critic_output_scale=[400.0]"` as '
        "`screen_control_bounded_critic`, `[100.0]` as `screen_control_bounded_critic_100`). The full "
        "design is "
        "`configs/controls/*.yaml` (10 seeds, 2000 episodes, published sequential update); this page is a "
        "**screen** at the reduced design of `docs/findings.md`: client-lr slice at master lr 1e-3, "
        f"seeds {seeds}, {', '.join(map(str, n_ep))} episodes, simultaneous update, each sweep run with "
        '`--set agent.actor_update=simultaneous --set training.episodes=300 --seeds "[0, 1]"` and, for the '
        'sweeps with more seeds, again with `--seeds "[0, 1, 2, 3, 4]"` (the sweep skips its finished runs) '
        '(the baseline: `configs/paper/table1_s10.yaml --axis "agent.critic_lr=[1.0e-3]"`).\n',
        "Each stop entry: Kaplan-Meier median episode (runs with the event / runs); 'never (0/n by episode "
        "E)': no run had it by its last episode E. Final return: mean evaluation return of the last 100 "
        "episodes, IQM over the runs with a 95% stratified-bootstrap CI (n per cell as given: a screen, not "
        "a test; with 2 runs the CI spans the two values). |out| > 0.9 and exactly saturated: fractions of "
        "actor outputs (exact: zero derivative), mean of the last 20 measured episodes; largest |z|: the "
        "largest output pre-activation of any actor in any episode. Gradient: the monitor's attribution of "
        "the actors' output gradients (`docs/monitor.md`): the fractions flowing, zero because the output "
        "is saturated, and zero because no gradient reaches the output from the loss (no path), mean of "
        "the last 20 episodes.\n",
        md(table),
        "Each control against the baseline, cell by cell: the actors' stop (log-rank test on the "
        "all-actors-stop episode, runs that never stop censored at their last episode; `lifelines`) and the "
        "final return (probability that a control run beats a baseline run, with its bootstrap CI; "
        "`rliable`; two-sided Mann-Whitney test), with Holm's correction over all the tests of this table. "
        "'not testable': no stop in either group. 'not detected at n = a vs b' does not mean 'no "
        "difference'.\n",
        md(comparisons(store)),
    ]
    out = Path(a.out)
    out.write_text("\n".join(text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
