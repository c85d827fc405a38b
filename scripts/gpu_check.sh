#!/usr/bin/env bash
# GPU check: the GPU test suite, then the kernel, CellProfiler and plate benchmarks on the GPU,
# writing JSON under benchmarks/results/. Run on a CUDA machine from the repository root:
#     bash scripts/gpu_check.sh            # everything
#     bash scripts/gpu_check.sh --quick    # small benchmark sizes
# On an offline machine without dask/distributed, carry wheels in .whl/ (see the README):
# they are installed into /tmp/gpuillum-site first. Logs are copied to $OUT when it is set.
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=""
[ "${1:-}" = "--quick" ] && QUICK="--quick"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpuillum-site .whl/*.whl
    export PYTHONPATH="/tmp/gpuillum-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
[ -d ../shared/data ] && export GPUILLUM_DATA="${GPUILLUM_DATA:-$(cd ../shared/data && pwd)}"
LOG=${OUT:-benchmarks/results}
mkdir -p "$LOG"
status=0
echo "== machine"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c "import cupy; print('cupy', cupy.__version__, 'available', cupy.is_available())"
echo "== GPU tests"
$PY -m pytest -q -m gpu tests 2>&1 | tee "$LOG/gpu-tests.log" || status=1
echo "== full test suite on this machine"
$PY -m pytest -q -x tests 2>&1 | tail -n 30 | tee "$LOG/all-tests.log" || status=1
echo "== kernel benchmarks (GPU)"
$PY benchmarks/bench_kernels.py --device gpu $QUICK || status=1
echo "== CellProfiler benchmarks"
$PY benchmarks/bench_cellprofiler.py $QUICK || status=1
echo "== plate benchmark"
$PY benchmarks/bench_plate.py $QUICK || status=1
[ -n "${OUT:-}" ] && cp benchmarks/results/*.json "$OUT"/ 2>/dev/null
exit $status
