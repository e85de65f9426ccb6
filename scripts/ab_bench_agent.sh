#!/usr/bin/env bash
# A/B of `ccm-madrl bench agent` between two source trees, on one core, alternated (A B B A ...), with
# this machine's sweeps paused (SIGSTOP/SIGCONT of every `ccm-madrl sweep` process and its children)
# so that the figures are not polluted; then a summary of the medians (summary.json).
#
#   bash scripts/ab_bench_agent.sh A_TREE B_TREE OUT [ROUNDS]
#   e.g. git worktree add --detach /tmp/before 6e0f41f
#        bash scripts/ab_bench_agent.sh /tmp/before . benchmarks/results/architecture/one_engine 2
#
# Per round and tree: solo (both update orders, 12 episodes, 10 steps), solo simultaneous (40
# episodes), a pack of 16 (sequential, 8 episodes); each `bench agent` JSON lands in
# OUT/<tag>_round<k>/{solo,solo40,pack16}/, the tag being the tree's short commit.
set -uo pipefail
A=$(cd "$1" && pwd); B=$(cd "$2" && pwd); OUT=$3; ROUNDS=${4:-2}
PY=${PY:-python}
mkdir -p "$OUT"
desc() { local p; for p in "$@"; do echo "$p"; desc $(pgrep -P "$p"); done; }
PIDS=$(desc $(pgrep -f "ccm-madrl sweep") | tr '\n' ' ')
[ -n "$PIDS" ] && kill -STOP $PIDS && echo "paused sweeps: $PIDS"
trap '[ -n "$PIDS" ] && kill -CONT $PIDS && echo "resumed sweeps"' EXIT
bench() { # bench TREE DIR ARGS...
    local tree=$1 dir=$2; shift 2
    mkdir -p "$dir"
    OMP_NUM_THREADS=1 PYTHONPATH="$tree/src" "$PY" -m ccm_madrl.cli bench agent --steps 10 "$@" --out "$dir" > "$dir.log" 2>&1
}
one() { # one TREE ROUND
    local d="$OUT/$(git -C "$1" rev-parse --short HEAD)_round$2"
    bench "$1" "$d/solo" --episodes 12 --update sequential simultaneous
    bench "$1" "$d/solo40" --episodes 40 --update simultaneous
    bench "$1" "$d/pack16" --pack 16 --episodes 8 --update sequential
    echo "$(date -u +%T) $d"
}
for k in $(seq 1 "$ROUNDS"); do
    if [ $((k % 2)) = 1 ]; then one "$A" "$k"; one "$B" "$k"; else one "$B" "$k"; one "$A" "$k"; fi
done
"$PY" "$(dirname "$0")/ab_bench_summary.py" "$OUT" "$(git -C "$A" rev-parse --short HEAD)" "$(git -C "$B" rev-parse --short HEAD)"
