#!/usr/bin/env bash
# The two Table 1 grids of docs/table1.md, as they are run for it: the golden-defined system
# (table1_s10) and the published-code preset (table1_s10_published), one sweep process each (one
# core each, nice 19, one torch thread), in packs of runs, seed by seed (every cell of the seeds
# given before later seeds); then the finished runs are archived in results/ and docs/table1.md is
# regenerated from the archives.
#
#   bash scripts/run_table1.sh                 # seed 0
#   bash scripts/run_table1.sh "[0, 1, 2]"     # seeds 0-2 (finished runs are skipped)
#   OUT=sweeps PACK=4 bash scripts/run_table1.sh "[1]"
#
# Before a deadline (a session's end, a job's time limit): scripts/table1_slices.sh starts only the
# slices (a seed x some client lrs) that finish in time, at the measured time per pack.
#
# Stopped (Ctrl-C, SIGTERM, a session's end), each sweep has checkpointed its runs; running the same
# command again resumes them. Progress: $OUT/<grid>.log (a line a minute, one per finished run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-sweeps}
PACK=${PACK:-4}
SEEDS=${1:-[0]}
mkdir -p "$OUT"

grid() {  # grid NAME [--set ...]: one sweep of configs/paper/table1_s10.yaml
    local name=$1
    shift
    OMP_NUM_THREADS=1 nice -n 19 ccm-madrl sweep configs/paper/table1_s10.yaml --name "$name" \
        --seeds "$SEEDS" --workers 1 --pack "$PACK" --out "$OUT/$name" "$@" >> "$OUT/$name.log" 2>&1
    echo "sweep $name: exit $? (log: $OUT/$name.log)"
}

grid table1_s10 &
grid table1_s10_published --set published_code=44fba1b &
wait
for name in table1_s10 table1_s10_published; do
    ccm-madrl archive "$OUT/$name" --out "results/$name"
done
# the prefix archives of both grids at 10 seeds (benchmarks/gpu/prefix.sh on a lent GPU), where present
prefix=()
for d in results/table1_s10_prefix_h100 results/table1_s10_published_prefix_h100; do [ -d "$d" ] && prefix+=("$d"); done
PYTHONPATH=src python scripts/table1_doc.py results/table1_s10 results/table1_s10_published --out docs/table1.md \
    ${prefix[@]:+--prefix "${prefix[@]}"}
