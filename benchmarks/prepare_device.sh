#!/usr/bin/env bash
# Builds .device-data/ (git-ignored) for the GPU check, within the device tool's 64 MiB:
#  - PACS/: half of art_painting and of cartoon (class-stratified, the same files every time);
#    the benchmark tiles them to the real domain sizes (--tile);
#  - whl/: the wheels the GPU machine lacks (pydantic and its parts) for its Python 3.12.
# Usage: benchmarks/prepare_device.sh /path/to/PACS
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:?usage: $0 /path/to/PACS}"
rm -rf .device-data && mkdir -p .device-data/whl
.venv/bin/python - "$root" <<'PY'
import shutil, sys
from pathlib import Path
import torch
from asha_tune.trial.data import list_domain, stratified_subset
root, out = Path(sys.argv[1]), Path(".device-data/PACS")
for domain in ("art_painting", "cartoon"):
    files = list_domain(root, domain)
    keep = stratified_subset(torch.tensor(files.labels), len(files.paths) // 2)
    for i in keep.tolist():
        src = files.paths[i]
        dst = out / domain / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    print(domain, len(keep), "images")
PY
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .device-data/whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing-extensions==4.16.0
du -sh .device-data
