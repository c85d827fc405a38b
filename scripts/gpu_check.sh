#!/usr/bin/env bash
# GPU check: the test suite on a CUDA machine (the GPU tests first, then the others), then the kernel, CellProfiler
# and plate benchmarks on the GPU, writing JSON under benchmarks/results/. From the repository root:
#     bash scripts/gpu_check.sh                       # every phase: tests kernels cellprofiler plate
#     bash scripts/gpu_check.sh tests kernels         # only these phases
#     bash scripts/gpu_check.sh --quick               # small benchmark sizes
# Each phase runs under a time limit (PHASE_TIMEOUT seconds, default 1800), so one slow phase cannot
# take the others with it. On an offline machine without dask/distributed, carry wheels in .whl/
# (see the README): they are installed into /tmp/gpuillum-site first. Logs go to $LOGDIR; when $OUT
# is set (a remote runner's output folder) the logs and the new results are packed into
# $OUT/gpu_check.tar.gz after every phase, so a run cut short still returns what it finished. The commit
# measured goes into machine.txt and every benchmark JSON: set GPUILLUM_COMMIT=$(git describe --always --dirty)
# when the machine holds a copy of the working tree without .git.
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=""
PHASES=()
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK="--quick" ;;
        tests|kernels|cellprofiler|plate) PHASES+=("$arg") ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (expected --quick or phases: tests kernels cellprofiler plate)" >&2; exit 2 ;;
    esac
done
[ ${#PHASES[@]} -eq 0 ] && PHASES=(tests kernels cellprofiler plate)
PY=${PYTHON:-python3}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-1800}
LOGDIR=${LOGDIR:-/tmp/gpuillum-gpu-check}
mkdir -p "$LOGDIR" benchmarks/results
STARTED="$LOGDIR/.started"
touch "$STARTED"

if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpuillum-site .whl/*.whl
    export PYTHONPATH="/tmp/gpuillum-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
[ -d ../shared/data ] && export GPUILLUM_DATA="${GPUILLUM_DATA:-$(cd ../shared/data && pwd)}"
# the console-script test needs `gpuillum` beside the interpreter: install it when it is missing
if [ ! -x "$(dirname "$($PY -c 'import sys; print(sys.executable)')")/gpuillum" ]; then
    $PY -m pip install -q --no-deps --no-index --no-build-isolation -e . >"$LOGDIR/install.log" 2>&1 \
        || echo "note: could not install the gpuillum console script (see $LOGDIR/install.log)"
fi

pack() {  # the logs and the results written since the start, into $OUT when it is set
    find benchmarks/results -name '*.json' -newer "$STARTED" -exec cp {} "$LOGDIR"/ \;
    [ -n "${OUT:-}" ] && tar czf "$OUT/gpu_check.tar.gz" -C "$LOGDIR" . 2>/dev/null
    return 0
}

phase() {  # phase NAME COMMAND...: run under the time limit, log, pack
    local name=$1; shift
    echo "== $name ($(date -u +%H:%M:%S))"
    timeout --signal=INT --kill-after=30 "$PHASE_TIMEOUT" "$@" 2>&1 | tee "$LOGDIR/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && echo "== $name: exit status $rc" && status=1
    pack
}

status=0
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    $PY -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'available', cupy.is_available())"
    echo "gpuillum at ${GPUILLUM_COMMIT:-$(git describe --always --dirty 2>/dev/null || echo 'an unknown commit (no .git here: set GPUILLUM_COMMIT)')}"
    date -u +%Y-%m-%dT%H:%M:%SZ
} 2>&1 | tee "$LOGDIR/machine.txt"
for name in "${PHASES[@]}"; do
    case "$name" in
        tests)
            phase gpu-tests $PY -m pytest -q -p no:cacheprovider -m gpu tests
            # the rest too: with a GPU present, `--device auto` runs the GPU path in end-to-end tests
            phase other-tests $PY -m pytest -q -p no:cacheprovider -m "not gpu" tests ;;
        kernels) phase kernels $PY benchmarks/bench_kernels.py --device gpu --peer-budget 6 $QUICK ;;
        cellprofiler) phase cellprofiler $PY benchmarks/bench_cellprofiler.py $QUICK ;;
        plate) phase plate $PY benchmarks/bench_plate.py $QUICK ;;
    esac
done
exit $status
