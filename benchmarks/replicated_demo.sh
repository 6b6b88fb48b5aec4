#!/usr/bin/env bash
# The CPU-scale demonstration in docs/compare.md: three replicates of a three-configuration
# paper grid and of a small TPE search, a search warm-started from the grid, then `compare` with
# importances and the DomainBed-style tables, and `report`'s page of the three. Random initialisation, 64 px, 120 images a domain,
# 3 epochs: it shows what the tool reports, not the paper's effect. About 4 minutes on 2 cores.
#   benchmarks/replicated_demo.sh PACS_ROOT [WORK_DIR]
set -euo pipefail
data_root=${1:?usage: benchmarks/replicated_demo.sh PACS_ROOT [WORK_DIR]}
work=${2:-./replicated-demo}
commit=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$work"
work=$(cd "$work" && pwd)
common=(--data-root "$data_root" --device cpu --tracking-uri "sqlite:///$work/mlflow.db"
    --study-url "sqlite:///$work/optuna.db" --results-dir "$work/results")
small=(--set data.image_size=64 --set data.limit_per_domain=120 --set train.epochs=3
    --set train.batch_size=32 --set train.weights=none --set resources.gpu=0 --set resources.cpu=1
    --set search.max_concurrent=2)
search=(--set search.num_trials=6 --set scheduler.grace_period=1)
asha-tune launch --space paper_grid --only baseline --only rand-c1-p0.7 --only da-c4-cartoon \
    "${small[@]}" --replicates 3 --name grid "${common[@]}"
asha-tune launch --space paper_search "${small[@]}" "${search[@]}" --replicates 3 --name search "${common[@]}"
asha-tune launch --space paper_search "${small[@]}" "${search[@]}" --warm-start grid --name warm "${common[@]}"
cd "$work"
asha-tune compare grid search warm --tracking-uri "sqlite:///$work/mlflow.db" --out "$work/compare"
asha-tune report grid search warm --tracking-uri "sqlite:///$work/mlflow.db" --out "$work/report.html"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores) · commit $commit · $(date -u +%F)"
