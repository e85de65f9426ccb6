#!/usr/bin/env bash
# One Table 1 grid in slices that finish before a deadline (a session, a lease, a job's time limit):
# each slice is one seed at some client lrs x the four master lrs (a pack of 4 runs per client lr),
# started only if it fits before DEADLINE at the time per pack of 4 measured so far (EST to begin
# with); the slices go into one sweep directory (`--extend`), which `ccm-madrl archive` reads.
#
#   DEADLINE=$(( $(date +%s) + 3*3600 )) EST=3300 bash scripts/table1_slices.sh table1_s10 "" "3|[1.0e-3]" "3|[1.0e-2]"
#   bash scripts/table1_slices.sh table1_s10_published "--set published_code=44fba1b" "4|[1.0e-4, 1.0e-3]"
#
# EST: seconds per pack of 4 runs x 2000 episodes on one core (3,300 quiet on a 2-core AMD EPYC,
# 6,400-8,300 with other work on the machine; the default is the loaded figure). Each sweep runs at
# nice 19 with one torch thread; progress: $OUT/<name>.log. A slice that is stopped has checkpointed
# its runs: the same command resumes them.
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=$1; SETARGS=$2; shift 2
OUT=${OUT:-sweeps}; EST=${EST:-8300}; DEADLINE=${DEADLINE:?set DEADLINE (seconds since the epoch)}
CRITIC="[1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1]"
mkdir -p "$OUT"
for slice in "$@"; do
    seed=${slice%%|*}; actor=${slice#*|}
    n=$(( $(echo "$actor" | tr ',' '\n' | wc -l) * 4 ))
    need=$(( EST * n / 4 + 120 )); left=$(( DEADLINE - $(date +%s) ))
    if [ "$need" -gt "$left" ]; then
        echo "$(date -u +%T) $NAME: slice $slice not started (needs ~$need s, $left s left)"; break
    fi
    echo "$(date -u +%T) $NAME: slice $slice ($n runs, ~$need s)"
    t0=$(date +%s)
    # shellcheck disable=SC2086  # SETARGS: zero or more arguments
    OMP_NUM_THREADS=1 nice -n 19 ccm-madrl sweep configs/paper/table1_s10.yaml --name "$NAME" \
        --seeds "[$seed]" --axis "agent.actor_lr=$actor" --axis "agent.critic_lr=$CRITIC" \
        --workers 1 --pack 4 --extend --no-progress --out "$OUT/$NAME" $SETARGS >> "$OUT/$NAME.log" 2>&1
    rc=$?
    EST=$(( ($(date +%s) - t0) * 4 / n ))
    echo "$(date -u +%T) $NAME: slice $slice exit $rc; $EST s per pack of 4"
    [ "$rc" = 0 ] || break
done
