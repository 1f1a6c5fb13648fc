#!/usr/bin/env bash
# The prepared GPU check of issues 21 and 24: the CUDA tests, the benchmarks on the GPU against
# their anchors on the same GPU and against the CPU, and the grad_hardware scenario with its
# report (about 8 minutes on one H100; every step under its own timeout, total under 10 minutes).
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh        # results in $OUT (default ./gpu_results)
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh      # on a machine without a GPU: checks that
#                                                         # every Python part runs (tiny sizes)
#
# Steps (a failing step is recorded and the next one runs):
#   env            nvidia-smi, torch/CUDA versions, the anchors installed
#   cuda_tests     tests/test_cuda.py: the engine loop, every optimizer family (steps under
#                  torch.cuda.set_sync_debug_mode("error")) and the report on CUDA
#   cuda_smoke     every registered optimizer on 5 landscapes, cuda against cpu
#   bench_replicates  SGD MLP steps/s for R = 1, 16, 256, 1024 and b = 32, 256, 1024, 4096 against
#                  torch.optim (R = 1), torch.func.vmap and a batched-matmul model on the same GPU
#   bench_device   GA, OpenAI-ES, CMA-ES and Wright-Fisher generations/s on the GPU against the CPU
#                  (D = 1000, population 10,000; CMA-ES D = 1000 and 256 runs at D = 100; N = 1e5)
#   grad_hardware  the scenario on the GPU with its report (time per batch against batch size,
#                  the fit t = a + c b, the noise scale and steps to target)
#   bench_sgd, bench_ga  the CPU benchmarks' rows with --device cuda (as in RESULTS.md)
# Then $OUT/RESULTS_gpu.md (every table with the GPU's name; paste it into RESULTS.md) and
# $OUT/SUMMARY.txt.  Exit status: the number of failed steps (0 = all ok).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-}"
Q=""; [ -n "$QUICK" ] && Q="--quick"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/SUMMARY.txt"
: > "$SUMMARY"
FAILED=0
START=$(date +%s)
CORES=$(nproc 2>/dev/null || echo 1)

step() {  # step NAME TIMEOUT_S COMMAND...
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s) rc
  echo "=== $name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then
    printf '%-18s ok      %4ss\n' "$name" "$dt" | tee -a "$SUMMARY"
  else
    [ $rc -eq 124 ] && why="TIMEOUT" || why="FAIL rc=$rc"
    printf '%-18s %-7s %4ss  (see %s.txt)\n' "$name" "$why" "$dt" "$name" | tee -a "$SUMMARY"
    tail -n 15 "$OUT/$name.txt" | sed 's/^/    | /'
    FAILED=$((FAILED + 1))
  fi
}

step env 60 bash -c "(nvidia-smi || echo 'no nvidia-smi'); $PY - <<'PYEOF'
import importlib, os, torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
if torch.cuda.is_available():
    print('gpu', torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**20, 'MiB')
for m in ('deap', 'cma', 'evotorch', 'threadpoolctl', 'numpy', 'pandas', 'pyarrow'):
    try:
        mod = importlib.import_module(m); print(m, getattr(mod, '__version__', '?'))
    except Exception as e:
        print(m, 'NOT INSTALLED', type(e).__name__)
assert os.environ.get('DEVICE', 'cuda') == 'cpu' or torch.cuda.is_available(), 'no CUDA device'
PYEOF"

# the CUDA tests (they skip without a GPU) and the sync/transfer tests that run everywhere
step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py

step cuda_smoke 90 "$PY" benchmarks/cuda_smoke.py --device "$DEVICE" --steps 3

step bench_replicates 150 "$PY" benchmarks/bench_replicates.py --device "$DEVICE" --threads 1 $Q \
  --replicates 1,16,256,1024 --batches 32,256,1024,4096 --examples 4096 --block 0.08 \
  --json "$OUT/bench_replicates.json"

step bench_device 150 "$PY" benchmarks/bench_device.py --device "$DEVICE" --cpu-threads "$CORES" $Q \
  --json "$OUT/bench_device.json"

HW_QUICK=""; [ -n "$QUICK" ] && HW_QUICK="--quick"
step grad_hardware 120 "$PY" -m evosgd run scenarios/grad_hardware.toml $HW_QUICK --device "$DEVICE" --workers 1 \
  --out "$OUT/results" --report --report-dir "$OUT/reports" --no-progress --force

B="--device $DEVICE --threads 1 $Q"
step bench_sgd 60 "$PY" benchmarks/bench_sgd.py $B --json "$OUT/bench_sgd.json"
step bench_ga 45 "$PY" benchmarks/bench_ga.py $B --parts time --anchors evotorch --json "$OUT/bench_ga.json"

"$PY" benchmarks/gpu_summary.py "$OUT" > /dev/null 2>&1 || echo "gpu_summary failed" | tee -a "$SUMMARY"
echo "--- total $(( $(date +%s) - START ))s, $FAILED failed step(s); results in $OUT (tables: RESULTS_gpu.md)" | tee -a "$SUMMARY"
"$PY" benchmarks/gpu_summary.py "$OUT" > /dev/null 2>&1
exit $FAILED
