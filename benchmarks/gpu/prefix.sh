#!/usr/bin/env bash
# Both Table 1 grids (configs/paper/table1_s10.yaml: the golden-defined system and the published-code
# preset), 160 runs each, every run the full 2000-episode config, trained on a lent GPU as two packs of
# 160 at once (one process each) for the first EPISODES episodes, then archived as prefix archives
# (`ccm-madrl archive --include-interrupted`) into $OUT/prefix.tar. The golden-defined grid is also
# the timed grid of benchmarks/gpu/pack_gpu.py (exactly as configured: checkpoints every 10 episodes,
# TensorBoard on); the published-code grid checkpoints only at its stop (training.checkpoint_every=1000,
# which changes no result). Fits one device call of about 9 minutes:
#
#   bash benchmarks/gpu/prefix.sh            # EPISODES=100 SECONDS_CAP=420 by default
#
# What it gives: docs/table1.md's section "The first 100 episodes at 10 seeds" (scripts/table1_doc.py
# --prefix results/table1_s10_prefix100 results/table1_s10_published_prefix100).
set -u
OUT=${OUT:-gpu_out}
EPISODES=${EPISODES:-100}
SECONDS_CAP=${SECONDS_CAP:-420}
KEEP=${KEEP:-/tmp/prefix_runs}
DEVICE=${DEVICE:-cuda}
# a small local check: DEVICE=cpu EPISODES=3 EXTRA='--seeds [0] --set training.eval_episodes=3' OUT=/tmp/o bash ...
read -r -a EXTRA <<< "${EXTRA:-}"
ARCH=${ARCH:-/tmp/prefix_arch}
mkdir -p "$OUT/ind" "$OUT/pub" "$KEEP" "$ARCH"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; $PY -c "import torch, numpy, numba; print(torch.__version__, torch.version.cuda, numpy.__version__, numba.__version__)"; } > "$OUT/machine.txt" 2>&1
one() {  # one NAME TAG [--set ...]: the grid for EPISODES episodes, then its prefix archive
  local name=$1 tag=$2 t0=$SECONDS
  shift 2
  timeout --signal=INT --kill-after=20 $((SECONDS_CAP + 60)) $PY benchmarks/gpu/pack_gpu.py grid --out "$OUT/$tag" \
    --device "$DEVICE" --seconds "$SECONDS_CAP" --max-episodes "$EPISODES" --keep "$KEEP/$name" "${EXTRA[@]}" "$@" \
    > "$OUT/$tag.log" 2>&1
  echo "grid $name: rc=$? in $((SECONDS - t0)) s" >> "$OUT/stages.txt"
  $PY -m ccm_madrl.cli archive "$KEEP/$name" --out "$ARCH/${name}_prefix$EPISODES" --no-baselines \
    --include-interrupted >> "$OUT/$tag.log" 2>&1
  echo "archive $name: rc=$? at $((SECONDS - t0)) s" >> "$OUT/stages.txt"
}
one table1_s10 ind &
one table1_s10_published pub --set published_code=44fba1b --set training.checkpoint_every=1000 &
wait
tar -C "$ARCH" -cf "$OUT/prefix.tar" .
cat "$OUT/stages.txt"; ls -la "$OUT" "$OUT"/*
