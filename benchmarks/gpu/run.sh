#!/usr/bin/env bash
# The packed engine on a lent GPU in one call (about 8 minutes): the 160-run table1_s10 grid as one
# pack (timed), `ccm-madrl bench agent --pack` on the device, and the agreement of packed runs on the
# device with the same runs alone on the device and on the CPU. Writes into $OUT (default ./gpu_out).
# STAGES (default "grid bench agree") picks stages; GRID_SECONDS, GRID_ARGS and *_TIMEOUT size them.
# Missing pure-Python dependencies travel as wheels in .whl/ (see benchmarks/gpu/README.md).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; $PY -c "import torch, numpy, numba; print(torch.__version__, torch.version.cuda, numpy.__version__, numba.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
stage() {  # name timeout command...
  local name=$1 t=$2; shift 2
  local t0=$SECONDS
  timeout --signal=INT --kill-after=20 "$t" "$@" > "$OUT/$name.log" 2>&1
  echo "stage $name: rc=$? in $((SECONDS - t0)) s" | tee -a "$OUT/stages.txt"
  tail -n 3 "$OUT/$name.log" | cut -c1-400
}
STAGES=${STAGES:-grid bench agree}
on() { [[ " $STAGES " == *" $1 "* ]]; }
on grid && stage grid "${GRID_TIMEOUT:-230}" $PY benchmarks/gpu/pack_gpu.py grid --out "$OUT" --device "${DEVICE:-cuda}" --seconds "${GRID_SECONDS:-150}" ${GRID_ARGS:-}
on bench && stage bench "${BENCH_TIMEOUT:-140}" $PY -m ccm_madrl.cli bench agent --pack 1 4 16 160 --device "${DEVICE:-cuda}" \
  --update sequential simultaneous --episodes 6 --out "$OUT"
on agree && stage agree "${AGREE_TIMEOUT:-90}" $PY benchmarks/gpu/pack_gpu.py agree --out "$OUT" --device "${DEVICE:-cuda}" --episodes 20
ls -la "$OUT"
