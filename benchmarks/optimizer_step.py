"""Which fix for fused SGD under a GradScaler costs less (issue 15, point 2): a training step timed
with the trial's own model, scaler and loop, for

  zeroed buffers  fused SGD, momentum buffers created as zeros before the first step (Trial's)
  foreach SGD     no fused SGD while the scaler is on (GradScaler unscales, then a foreach step)

    python benchmarks/optimizer_step.py --data-root PACS [--device cpu] [--image-size 64]

On the CPU, fp16 autocast and an enabled GradScaler are emulated (the trial refuses fp16 there):
the figures say which optimizer step is cheaper, not how fast fp16 trains on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asha_tune.trial import training
from asha_tune.trial.augmentation import augment
from asha_tune.trial.config import Runtime, TrialConfig
from asha_tune.trial.devices import versions
from benchmarks.speed import device_name, sync


def build(config: TrialConfig, runtime: Runtime, variant: str) -> training.Trial:
    trial = training.Trial(config, runtime)
    if variant == "foreach SGD":
        t = config.train
        trial.optimizer = torch.optim.SGD(
            trial.model.parameters(),
            lr=t.lr,
            momentum=t.momentum,
            nesterov=t.nesterov,
            weight_decay=t.weight_decay,
            foreach=True,
        )
    return trial


def time_steps(trial: training.Trial, steps: int, warmup: int) -> dict:
    """Median milliseconds of a whole training step and of its optimizer part (step + update)."""
    d, b = trial.config.data, trial.config.train.batch_size
    source = trial.data.source
    whole, optimizer = [], []
    for i in range(warmup + steps):
        idx = torch.arange(i * b, (i + 1) * b, device=trial.device) % len(source)
        start = sync(trial.device)
        x = trial._input(augment(source.train[idx], d.image_size, trial.gens.augment))
        with trial._autocast():
            loss = trial.loss_fn(trial.model(x), source.labels[idx])
        trial.optimizer.zero_grad(set_to_none=True)
        trial.scaler.scale(loss).backward()
        stepping = sync(trial.device)
        trial.scaler.step(trial.optimizer)
        trial.scaler.update()
        end = sync(trial.device)
        if i >= warmup:
            whole.append(1000 * (end - start))
            optimizer.append(1000 * (end - stepping))
    return {"step_ms": statistics.median(whole), "optimizer_ms": statistics.median(optimizer), "steps": steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/asha-tune-bench-cache"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    runtime = Runtime(data_root=args.data_root, cache_dir=args.cache_dir, device=args.device)
    config = TrialConfig.model_validate(
        {
            "data": {"image_size": args.image_size, "limit_per_domain": 256},
            "train": {"batch_size": args.batch, "weights": "none", "precision": "fp16"},
        }
    )
    if runtime.device == "cpu":  # emulate fp16 + an enabled scaler, as the CPU tests do
        training.autocast_dtype = lambda precision, device: torch.float16
    device = training.resolve_device(args.device)
    report = {"device": device_name(device), "versions": versions(), "date": time.strftime("%Y-%m-%d")}
    report["setup"] = f"ResNet-18, {args.image_size} px, batch {args.batch}, fp16 autocast + GradScaler"
    variants = ("zeroed buffers", "foreach SGD")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(2):  # interleaved, so a machine whose load changes favours neither
        for variant in variants:
            runs[variant].append(time_steps(build(config, runtime, variant), args.steps, args.warmup))
    for variant in variants:
        report[variant] = {
            k: statistics.mean(r[k] for r in runs[variant]) for k in ("step_ms", "optimizer_ms")
        }
    print(f"{report['device']} · torch {report['versions']['torch']} · {report['setup']}")
    for variant in variants:
        r = report[variant]
        print(
            f"{variant:16s} step {r['step_ms']:8.1f} ms   "
            f"optimizer (scaler.step + update) {r['optimizer_ms']:6.2f} ms"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
