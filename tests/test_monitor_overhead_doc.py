"""docs/monitor.md's "Overhead" table holds the numbers of the file it cites."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "monitor.md"
RESULT = ROOT / "benchmarks" / "results" / "monitor_plasticity.json"


def test_the_overhead_table_is_the_benchmark_files():
    section = DOC.read_text().split("## Overhead", 1)[1].split("\n## ", 1)[0]
    data = json.loads(RESULT.read_text())
    assert (
        "benchmarks/results/monitor_plasticity.json" in section
        and data["command"].split(" --out")[0] in section
    )
    for update, s in data["summary"].items():
        (line,) = [row for row in section.splitlines() if row.startswith(f"| {update} |")]
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        k = s["overhead_at_rank_interval"]
        want = [s["base"]["overhead_fraction"], s["no_ranks"]["overhead_fraction"], k["1"], k["10"], k["50"]]
        assert float(cells[0]) == round(s["base"]["episode_ms_monitor_off"])
        assert [float(re.sub("%$", "", c)) for c in cells[1:]] == [round(100 * w, 1) for w in want], update
