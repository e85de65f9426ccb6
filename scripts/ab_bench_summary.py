"""The medians of an A/B of `ccm-madrl bench agent` (scripts/ab_bench_agent.sh): OUT/summary.json and a table.

python scripts/ab_bench_summary.py OUT A_COMMIT B_COMMIT
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

SETUPS = [
    ("solo", "episode_ms_median", "solo, ms per episode"),
    ("solo40", "episode_ms_median", "solo (40 episodes), ms per episode"),
    ("pack16", "run_episode_ms_median", "pack of 16, ms per run-episode"),
]


def medians(out: Path, tag: str, sub: str, key: str) -> dict[str, list[float]]:
    vals: dict[str, list[float]] = {}
    for f in sorted(out.glob(f"{tag}_round*/{sub}/*.json")):
        for r in json.loads(f.read_text())["results"]:
            vals.setdefault(r["actor_update"], []).append(r[key])
    return vals


def main(out: Path, a: str, b: str) -> None:
    rows = []
    for sub, key, what in SETUPS:
        va, vb = medians(out, a, sub, key), medians(out, b, sub, key)
        for order, xs in va.items():
            ys = vb.get(order, [])
            ma, mb = statistics.median(xs), statistics.median(ys) if ys else float("nan")
            rows.append({"setup": what, "update": order, "a_rounds": xs, "b_rounds": ys,
                         "a_median": ma, "b_median": mb, "b_over_a": mb / ma})  # fmt: skip
    summary = {"a": a, "b": b, "command": f"python scripts/ab_bench_summary.py {out} {a} {b}", "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for r in rows:
        print(f"{r['setup']:36s} {r['update']:12s} {a} {r['a_median']:7.1f}  {b} {r['b_median']:7.1f}  "
              f"ratio {r['b_over_a']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
