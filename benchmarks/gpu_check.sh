#!/usr/bin/env bash
# The one prepared device check: the CUDA tests (marked gpu), then the speed benchmark, each on
# its own time limit, so that a failing or hanging test never stops the benchmark. Everything
# lands in $OUT as it is produced: versions.txt first, gpu-tests.log, benchmark-<profile>.json
# and .txt (rewritten after every section: a timeout keeps what was measured), benchmark.log
# and summary.txt. Run through the device tool with carry [".device-data"], e.g.
#   bash benchmarks/gpu_check.sh            (after benchmarks/prepare_device.sh PACS here)
# One run is sized for ~6 minutes on an H100/H200 (benchmarks/RESULTS.md gives the estimate).
# Settings (environment):
#   PROFILE=cpu      the same plumbing on a machine without a GPU (default gpu)
#   BUDGET_S=360     seconds for the whole check (default 360; 3600 with PROFILE=cpu)
#   TESTS_S=150      at most this for the tests; the benchmark gets what is left
#   PYTEST_ARGS=...  other tests to run (default: -m gpu tests/gpu/test_gpu.py)
#   SPEED_ARGS=...   more flags for benchmarks/speed.py (e.g. --variants --sharing 1)
#   PYTHON=python3   the interpreter (the device machine's python3 holds torch)
set -uo pipefail # no -e: every step runs, whatever the one before it did
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
profile="${PROFILE:-gpu}"
out="${OUT:-/tmp/asha-tune-gpu-check}"
mkdir -p "$out"
if [ "$profile" = cpu ]; then budget="${BUDGET_S:-3600}"; else budget="${BUDGET_S:-360}"; fi
py="${PYTHON:-python3}"
begin=$SECONDS

if ! "$py" -c "import pydantic, psutil, pynvml" 2>/dev/null; then # the device machine has torch, not pydantic
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/asha-tune-site .device-data/whl/*.whl
  export PYTHONPATH="/tmp/asha-tune-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"

{
  date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$py" -c "import json; from asha_tune.trial.devices import versions; print(json.dumps(versions()))" 2>&1
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())" 2>&1
  [ -f .device-data/commit.txt ] && echo "prepared at commit $(cat .device-data/commit.txt)"
} | tee "$out/versions.txt"

# 1. The tests: their own limit, their log, their exit status.
read -r -a pytest_args <<<"${PYTEST_ARGS:--m gpu tests/gpu/test_gpu.py}"
timeout -k 10 "${TESTS_S:-150}" "$py" -m pytest -q -p no:cacheprovider -rs "${pytest_args[@]}" \
  >"$out/gpu-tests.log" 2>&1
tests_rc=$?
tail -n 25 "$out/gpu-tests.log"

# 2. The benchmark: whatever time is left (at least a minute), its figures kept section by section.
left=$((budget - (SECONDS - begin)))
[ "$left" -lt 60 ] && left=60
read -r -a speed_args <<<"${SPEED_ARGS:-}"
timeout -k 10 "$left" "$py" benchmarks/speed.py --profile "$profile" --data-root .device-data/PACS --tile \
  --cache-dir /tmp/asha-tune-bench-cache --budget-s "$((left - 15))" \
  --out "$out/benchmark-$profile.json" --table "$out/benchmark-$profile.txt" "${speed_args[@]}" \
  >/dev/null 2>"$out/benchmark.log"
bench_rc=$?
cat "$out/benchmark-$profile.txt" 2>/dev/null || echo "no table: see benchmark.log"

summary="gpu check ($profile): tests exit $tests_rc, benchmark exit $bench_rc$([ $bench_rc -eq 124 ] && echo ' (timed out: the figures so far are kept)'), $((SECONDS - begin)) s"
echo "$summary" | tee "$out/summary.txt"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
