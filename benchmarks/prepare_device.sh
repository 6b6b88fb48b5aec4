#!/usr/bin/env bash
# Builds .device-data/ (git-ignored) for the GPU check, within the device tool's 64 MiB:
#  - PACS/: half of art_painting and of cartoon (class-stratified, the same files every time);
#    the benchmark tiles them to the real domain sizes (--tile);
#  - whl/: the wheels the GPU machine lacks (pydantic and its parts; psutil and nvidia-ml-py, which
#    trial/usage.py reads a trial's CPU and GPU use with) for its Python 3.12;
#  - commit.txt: the commit it was prepared at (the device machine gets no .git).
# Usage: benchmarks/prepare_device.sh /path/to/PACS
# Works from a fresh checkout, .venv or not: the Python is the first of $PYTHON, .venv/bin/python,
# the interpreter of an installed `asha-tune` command, python3, that can import asha_tune.trial.loading
# (torch, pydantic, Pillow); asha_tune itself comes from this checkout (PYTHONPATH), so an
# environment with the dependencies and without the package does too.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:?usage: $0 /path/to/PACS}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
candidates=("${PYTHON:-}" .venv/bin/python)
if command -v asha-tune >/dev/null; then candidates+=("$(head -1 "$(command -v asha-tune)" | sed 's/^#!//')"); fi
candidates+=(python3)
py=""
for candidate in "${candidates[@]}"; do
  if [ -n "$candidate" ] && "$candidate" -c "import asha_tune.trial.loading" 2>/dev/null; then
    py="$candidate"
    break
  fi
done
if [ -z "$py" ]; then
  echo "prepare_device.sh: no Python here can import asha_tune.trial.loading (tried: ${candidates[*]}); it needs" \
    "torch, pydantic and Pillow: run make install, or set PYTHON to an interpreter that has them" >&2
  exit 2
fi
echo "using $py"
rm -rf .device-data && mkdir -p .device-data/whl
"$py" - "$root" <<'PY'
import shutil, sys
from pathlib import Path
import torch
from asha_tune.trial.datasets import list_dataset
from asha_tune.trial.loading import stratified_subset
root, out = Path(sys.argv[1]), Path(".device-data/PACS")
for domain in ("art_painting", "cartoon"):
    files = list_dataset("pacs", root, [domain])[domain]
    keep = stratified_subset(torch.tensor(files.labels), len(files.paths) // 2)
    for i in keep.tolist():
        src = files.paths[i]
        dst = out / src.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    print(domain, len(keep), "images")
PY
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .device-data/whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing-extensions==4.16.0 psutil==7.2.2 nvidia-ml-py==13.615.71
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
  [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit+changes"
  echo "$commit" >.device-data/commit.txt
fi
du -sh .device-data
