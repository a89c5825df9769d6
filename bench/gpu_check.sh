#!/usr/bin/env bash
# One script for the lent GPU machine (Python 3.12, CUDA torch, triton 3.6, no internet, no
# DALI/xformers). Within ~8 minutes it:
#   1. builds the extension with CUDA (in place),
#   2. runs the tests marked `cuda`,
#   3. runs every benchmark in quick mode,
# and writes logs + JSON results under $OUT (default ./gpu_out). Commit them to bench/results/.
#
#   OUT=/tmp/out bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
status=0
step() { echo "=== $* ($(date +%H:%M:%S))" | tee -a "$OUT/summary.txt"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.csv" 2>&1
$PY -c 'import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.get_device_name())' | tee -a "$OUT/summary.txt"

step "build the extension with CUDA"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}
if ! timeout 300 $PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
  tail -n 40 "$OUT/build.log"; echo "BUILD FAILED" | tee -a "$OUT/summary.txt"; exit 1
fi
$PY -m slpfast.info > "$OUT/info.txt" 2>&1; cat "$OUT/info.txt"

step "pytest -m cuda"
timeout 240 $PY -m pytest -q -m cuda -p no:cacheprovider tests --junitxml="$OUT/pytest-cuda.xml" > "$OUT/pytest-cuda.log" 2>&1
rc=$?; tail -n 30 "$OUT/pytest-cuda.log"; echo "pytest -m cuda exit $rc" | tee -a "$OUT/summary.txt"
[ $rc -eq 0 ] || status=1

for b in bench/*.py; do
  name=$(basename "$b" .py)
  case "$name" in _*) continue ;; esac
  step "bench $name --quick"
  timeout 150 $PY "$b" --quick --json "$OUT/$name.jsonl" > "$OUT/$name.txt" 2>&1
  rc=$?; tail -n 25 "$OUT/$name.txt"; echo "bench $name exit $rc" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || status=1
done
step "done (status $status)"
exit $status
