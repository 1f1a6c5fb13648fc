#!/usr/bin/env bash
# End-to-end check of the CUDA path, then the benchmarks on the GPU (about 8 minutes).
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh      # results in $OUT (default ./gpu_results)
#
# Steps (each under its own timeout; a failing step is recorded and the next one runs):
#   1. environment: nvidia-smi, torch/CUDA versions, the anchors installed
#   2. cuda_smoke: every registered optimizer on 5 landscapes, cuda vs cpu (device, finiteness,
#      identical budget accounting, identical landscape instances)
#   3. the engines' unit tests (they run on the CPU; device "auto" picks CUDA where a test uses it)
#   4. the quickstart scenario with --device cuda (--quick), and its report
#   5. the benchmarks with --device cuda at moderate size (JSON + text per benchmark)
# Then a summary (also in $OUT/SUMMARY.txt).  Exit status: the number of failed steps (0 = all ok).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python}"
DEVICE="${DEVICE:-cuda}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/SUMMARY.txt"
: > "$SUMMARY"
FAILED=0
START=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s) rc
  echo "=== $name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then
    printf '%-28s ok      %4ss\n' "$name" "$dt" | tee -a "$SUMMARY"
  else
    [ $rc -eq 124 ] && why="TIMEOUT" || why="FAIL rc=$rc"
    printf '%-28s %-7s %4ss  (see %s.txt)\n' "$name" "$why" "$dt" "$name" | tee -a "$SUMMARY"
    tail -n 15 "$OUT/$name.txt" | sed 's/^/    | /'
    FAILED=$((FAILED + 1))
  fi
}

step env 60 bash -c "nvidia-smi; $PY - <<'PYEOF'
import torch, importlib
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
if torch.cuda.is_available():
    print('gpu', torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**20, 'MiB')
for m in ('deap', 'cma', 'evotorch', 'numpy', 'pandas', 'pyarrow'):
    try:
        mod = importlib.import_module(m); print(m, getattr(mod, '__version__', '?'))
    except Exception as e:
        print(m, 'NOT INSTALLED', type(e).__name__)
assert torch.cuda.is_available(), 'no CUDA device'
PYEOF"

step cuda_smoke 120 "$PY" benchmarks/cuda_smoke.py --device "$DEVICE"

step engine_tests 150 "$PY" -m pytest -q -x -p no:cacheprovider \
  tests/test_ga.py tests/test_operators.py tests/test_cmaes.py tests/test_es.py tests/test_openai_es.py \
  tests/test_wright_fisher.py tests/test_gradient_sgd.py tests/test_gradient_transforms.py -m "not slow"

step quickstart 120 "$PY" -m evosgd run scenarios/quickstart.toml --quick --device "$DEVICE" --workers 1 \
  --out "$OUT/results" --report --report-dir "$OUT/reports" --no-progress --force

B="--device $DEVICE --threads 4"
step bench_scaling 150 "$PY" benchmarks/bench_scaling.py $B --png "$OUT/scaling_cuda.png" --json "$OUT/bench_scaling.json"
step bench_sgd 90 "$PY" benchmarks/bench_sgd.py $B --json "$OUT/bench_sgd.json"
step bench_ga 90 "$PY" benchmarks/bench_ga.py $B --parts time --json "$OUT/bench_ga.json"
step bench_cmaes 60 "$PY" benchmarks/bench_cmaes.py $B --parts time --json "$OUT/bench_cmaes.json"
step bench_wright_fisher 60 "$PY" benchmarks/bench_wright_fisher.py $B --json "$OUT/bench_wright_fisher.json"

echo "--- total $(( $(date +%s) - START ))s, $FAILED failed step(s); results in $OUT" | tee -a "$SUMMARY"
echo "--- tables:"
for f in "$OUT"/bench_*.txt; do
  [ -f "$f" ] && sed -n '/^## /,$p' "$f"
done
exit $FAILED
