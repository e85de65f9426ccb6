"""Figures of the monitor demonstration (docs/monitor_demo.md).

Usage: python scripts/monitor_demo_figures.py RUN_DIR [RUN_DIR ...] --out docs/figures
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ccm_madrl.store import load  # noqa: E402

COLORS = {0.1: "#D55E00", 0.0001: "#0072B2"}  # Okabe-Ito


def adam_tail(lr: float, episodes: range, first_zero: int) -> list[float]:
    """Ideal Adam update after one gradient at step 1 and zeros from then on."""
    b1, b2 = 0.9, 0.999
    m = v = 0.0
    out = []
    for t in range(1, max(episodes) + 1):
        g = 1.0 if t < first_zero else 0.0
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        out.append(lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + 1e-8))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="docs/figures")
    a = ap.parse_args()
    s = load(a.runs)
    runs = s.runs.set_index("run_id")
    m = s.metrics
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted(int(x) for x in runs["cfg.seed"].unique())
    title = f"{len(runs)} runs: client lr 0.1 and 1e-4, master lr 1e-3, 10 steps, seeds {seeds}"

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for rid, g in m[m.trained].groupby("run_id"):
        lr, seed = runs.loc[rid, "cfg.agent.actor_lr"], runs.loc[rid, "cfg.seed"]
        ls = "-" if seed == 0 else "--"
        c = COLORS.get(lr, "k")
        axes[0].semilogy(
            g.episode,
            g.actor_grad_norm.clip(lower=1e-12),
            ls,
            color=c,
            label=f"actors, lr {lr:g}, seed {seed}",
        )
        axes[0].semilogy(
            g.episode,
            g.critic_grad_norm,
            ls,
            color="0.4",
            lw=0.8,
            label="critic" if rid == m.run_id.iloc[0] else None,
        )
        axes[1].semilogy(
            g.episode, g.actor_max_abs_change.clip(lower=1e-14), ls, color=c, label=f"lr {lr:g}, seed {seed}"
        )
        axes[2].plot(
            g.episode, g.actor_sat_exact_frac, ls, color=c, label=f"exactly saturated, lr {lr:g}, seed {seed}"
        )
        axes[2].plot(
            g.episode,
            g.actor_out_gt09_frac,
            ls,
            color=c,
            alpha=0.4,
            lw=3,
            label=f"|out| > 0.9, lr {lr:g}, seed {seed}",
        )
    eps = range(1, int(m.episode.max()) + 1)
    axes[1].semilogy(
        list(eps), adam_tail(0.1, eps, 2), ":", color="k", label="Adam update after one gradient (lr 0.1)"
    )
    axes[1].axhline(1e-8, color="k", lw=0.7)
    axes[0].set(title="gradient L2 norm (0 drawn at 1e-12)", xlabel="episode")
    axes[1].set(title="largest |weight change| of any actor", xlabel="episode")
    axes[2].set(title="actor outputs: saturation", xlabel="episode", ylim=(-0.02, 1.02))
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "monitor_demo.png", dpi=110)
    print(out / "monitor_demo.png")


if __name__ == "__main__":
    main()
