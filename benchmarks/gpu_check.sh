#!/usr/bin/env bash
# The one prepared device check: CUDA paths (tests marked gpu), then the speed benchmark; the
# table comes last. Run through the device tool with carry [".device-data"], e.g.
#   bash benchmarks/gpu_check.sh            (after benchmarks/prepare_device.sh PACS here)
# PROFILE=cpu runs the same plumbing on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out="${OUT:-/tmp}"
if ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device-data/whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$out/gpu-tests.log" | tail -3
python3 benchmarks/speed.py --profile "${PROFILE:-gpu}" --data-root .device-data/PACS --tile \
  --cache-dir /tmp/asha-bench-cache --out "$out/benchmark-${PROFILE:-gpu}.json" 2> "$out/benchmark.log"
