"""The monitor's cost with and without the plasticity measures, A/B against another source tree.

Runs ``ccm_madrl.bench.bench_monitor`` (the monitor's overhead at interval 1, both update orders,
measured and unmeasured episodes alternating in one run) in fresh interpreters, alternating:

- ``base``: the source tree ``--base-src`` (the monitor without the plasticity measures);
- ``ranks_every``: this tree, ranks computed on every measured episode (``rank_interval = 1``);
- ``no_ranks``: this tree, ranks never computed (the other plasticity measures only).

The ranks' cost at ``rank_interval = k`` is one k-th of theirs: overhead(k) = overhead(no_ranks) +
(overhead(ranks_every) - overhead(no_ranks)) / k, reported for the candidate intervals. Medians over
``--rounds`` rounds. Usage (from the repository root)::

    git archive 52d0eeb src | tar -x -C /tmp/base    # the tree before the plasticity measures
    OMP_NUM_THREADS=1 python benchmarks/monitor_plasticity.py --base-src /tmp/base/src \
        --base-commit 52d0eeb --rounds 5 --out benchmarks/results/monitor_plasticity.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
VARIANTS = {"base": None, "ranks_every": 1, "no_ranks": 10**9}
CANDIDATES = (1, 10, 25, 50, 100)


def worker(rank_interval: int | None, episodes: int, eval_episodes: int) -> None:
    from ccm_madrl import bench

    if rank_interval is not None:
        from ccm_madrl.monitor import core

        core.RANK_INTERVAL = rank_interval  # the default every monitor of the run takes
    res = bench.bench_monitor(episodes=episodes, eval_episodes=eval_episodes)
    print(json.dumps({"machine": bench.machine(), **res}))


def commit(src: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def run_variant(name: str, base_src: Path, episodes: int, eval_episodes: int) -> dict:
    src = base_src if name == "base" else SRC
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    ri = VARIANTS[name]
    cmd = [sys.executable, __file__, "--worker", "--episodes", str(episodes), "--eval-episodes", str(eval_episodes)]
    if ri is not None:
        cmd += ["--rank-interval", str(ri)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Median overhead and episode times per (variant, update order); the amortised rank cost."""
    out: dict = {}
    for name, rs in runs.items():
        for upd in ("simultaneous", "sequential"):
            rows = [r for res in rs for r in res["results"] if r["actor_update"] == upd]
            out.setdefault(upd, {})[name] = {
                k: median([r[k] for r in rows])
                for k in ("overhead_fraction", "episode_ms_monitor_off", "episode_ms_monitor_on")
            }
            out[upd][name]["overhead_fraction_per_round"] = [r["overhead_fraction"] for r in rows]
    for upd, d in out.items():
        full, none = d["ranks_every"]["overhead_fraction"], d["no_ranks"]["overhead_fraction"]
        d["overhead_at_rank_interval"] = {str(k): none + (full - none) / k for k in CANDIDATES}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-src", type=Path, help="src/ of the tree to compare against (e.g. main)")
    ap.add_argument("--base-commit", help="the base tree's commit, when it is not a git checkout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rank-interval", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.rank_interval, a.episodes, a.eval_episodes)
        return
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for i in range(a.rounds):
        for name in VARIANTS:
            runs[name].append(run_variant(name, a.base_src, a.episodes, a.eval_episodes))
            print(f"round {i + 1}/{a.rounds} {name}: "
                  + ", ".join(f"{r['actor_update']} {r['overhead_fraction']:.3f}" for r in runs[name][-1]["results"]),
                  flush=True)  # fmt: skip
        write(a, runs, i + 1)


def write(a: argparse.Namespace, runs: dict[str, list[dict]], rounds_done: int) -> None:
    """The result after each complete round (the file holds the rounds done so far)."""
    res = {
        "benchmark": "monitor_plasticity",
        "command": "OMP_NUM_THREADS=1 python benchmarks/monitor_plasticity.py " + " ".join(sys.argv[1:]),
        "machine": runs["no_ranks"][0]["machine"],
        "commits": {"base": a.base_commit or commit(a.base_src), "this": commit(SRC)},
        "episodes_per_run": a.episodes,
        "eval_episodes": a.eval_episodes,
        "rounds": rounds_done,
        "summary": summarize(runs),
        "runs": runs,
    }
    text = json.dumps(res, indent=2)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(json.dumps(res["summary"], indent=2), flush=True)


if __name__ == "__main__":
    main()
