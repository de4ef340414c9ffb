#!/usr/bin/env bash
# GPU readiness in one call: the `cuda` tests, then the GPU figures (benchmarks/gpu_bench.py).
#
#   python benchmarks/gpu_prepare.py          # here, once: builds .gpu/ (wheels, real data subsets, weights)
#   bash benchmarks/gpu_check.sh [OUT_DIR]    # on the GPU machine, from the checkout's root, with .gpu/ carried
#
# Made for a machine that has a GPU but no network and no Hydra: the package runs from the checkout
# (PYTHONPATH=., no `pip install -e .`, whose torch pin need not hold there) and the wheels in
# .gpu/whl are installed with --no-index --no-deps into a private folder. Without a GPU it says so
# and exits 0. Results: OUT_DIR (default $OUT, else benchmarks/results/gpu) gets cuda_tests.log,
# cuda_tests.xml, gpu_bench.json and gpu_bench.md. Sized to take <= 5 minutes with compilation.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results/gpu}}"
PY="${PYTHON:-python3}"

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_check: $PY cannot import torch; set PYTHON=/path/to/python (e.g. PYTHON=.venv/bin/python)" >&2
  exit 1
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: needs a CUDA GPU, and none is visible here (torch.cuda.is_available() is false): nothing to do"
  exit 0
fi
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export IMGCLS_CACHE="${IMGCLS_CACHE:-$(mktemp -d)}"
if [ -d .gpu/whl ] && ! "$PY" -c 'import hydra, omegaconf' 2>/dev/null; then
  site="$(mktemp -d)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu/whl/*.whl \
    || { echo "gpu_check: installing .gpu/whl failed" >&2; exit 1; }
  export PYTHONPATH="$PYTHONPATH:$site"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT_DIR/gpu.txt"

status=0
echo "== cuda tests"
t0=$(date +%s)
"$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider --junitxml="$OUT_DIR/cuda_tests.xml" \
  2>&1 | tee "$OUT_DIR/cuda_tests.log" || status=1
echo "cuda tests: $(( $(date +%s) - t0 ))s"

echo "== benchmarks"
# the photo part needs .gpu/data and .gpu/weights; the speed part needs nothing on disk
"$PY" benchmarks/gpu_bench.py --out "$OUT_DIR" --deadline "${GPU_BENCH_DEADLINE:-200}" "${@:2}" || status=1
exit $status
