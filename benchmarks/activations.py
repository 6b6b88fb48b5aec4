"""How large A * M_t gets at each conv in fp16 (issue 15, point 7), on real PACS.

Mode `target` with shape_fn `raw` multiplies two pre-BatchNorm activations: a source image's
conv output A and a target image's M_t at the same conv. Under fp16 autocast a product above
65,504 is inf, and one inf poisons the BatchNorm statistics of the whole batch. This measures,
per shapeable conv and image size, max |A|, max |M_t| and max |A * M_t| (multiplied in fp32 from
the fp16 activations), from fp16 forwards on the CPU, at random initialisation and after a few
training steps of the paper's recipe (mode target, conv 4, raw, lr 1e-3). ImageNet weights
cannot be fetched here, so the pretrained network the paper starts from is NOT measured.

    python benchmarks/activations.py --data-root PACS [--sizes 64,128,224] [--steps 24]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asha_tune.trial.augmentation import augment
from asha_tune.trial.config import SHAPEABLE_CONVS, Runtime, TrialConfig
from asha_tune.trial.devices import versions
from asha_tune.trial.shaping import frozen_bn_stats, numbered_convs
from asha_tune.trial.training import Trial
from benchmarks.speed import device_name

FP16_MAX = 65504.0


def conv_outputs(trial: Trial, images: torch.Tensor, size: int, seed: int) -> dict[int, torch.Tensor]:
    """Every shapeable conv's output on a batch, from an unshaped fp16 forward in train mode (as
    training records M_t), BatchNorm's running statistics left as they were."""
    convs = numbered_convs(trial.model)
    outputs: dict[int, torch.Tensor] = {}
    handles = [
        convs[n].register_forward_hook(lambda m, i, out, n=n: outputs.__setitem__(n, out.detach()))
        for n in SHAPEABLE_CONVS
    ]
    x = augment(images, size, torch.Generator().manual_seed(seed))
    try:
        trial.model.train()
        with torch.no_grad(), frozen_bn_stats(trial.model), trial.shaper.acting("off"):
            with torch.autocast("cpu", dtype=torch.float16):
                trial.model(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def magnitudes(trial: Trial, batch: int) -> dict[int, dict]:
    """Per conv: max |A|, max |M_t|, max |A * M_t| and how many products fp16 cannot hold."""
    size = trial.config.data.image_size
    source = conv_outputs(trial, trial.data.source.train[:batch], size, 1)
    target = conv_outputs(trial, trial.data.adaptation.train[:batch], size, 2)
    out = {}
    for n in SHAPEABLE_CONVS:
        a, m = source[n], target[n]
        assert a.dtype == torch.float16
        product = a.float() * m.float()  # exact enough in fp32, never inf here
        out[n] = {
            "max_a": a.abs().max().item(),
            "max_m": m.abs().max().item(),
            "max_product": product.abs().max().item(),
            "p99_99_product": product.abs().flatten().float().quantile(0.9999).item()
            if product.numel() <= 16_000_000
            else float("nan"),
            "over_fp16": int((product.abs() > FP16_MAX).sum()),
            "inf_in_fp16_product": int(torch.isinf(a * m).sum()),
        }
    return out


def measure_size(size: int, args: argparse.Namespace) -> dict:
    runtime = Runtime(data_root=args.data_root, cache_dir=args.cache_dir, device="cpu")
    config = TrialConfig.model_validate(
        {
            "data": {"image_size": size, "limit_per_domain": args.limit},
            "shaping": {"mode": "target", "convs": [4], "shape_fn": "raw"},
            "train": {"batch_size": args.batch, "weights": "none", "precision": "fp32", "epochs": 30},
        }
    )
    trial = Trial(config, runtime)
    result = {"init": magnitudes(trial, args.batch)}
    steps_per_epoch = -(-len(trial.data.source) // args.batch)
    epochs = max(1, round(args.steps / steps_per_epoch))
    for _ in range(epochs):  # the paper's recipe, fp32 (fp16 training on the CPU is far too slow)
        trial.train_epoch()
    result[f"after {epochs * steps_per_epoch} steps"] = magnitudes(trial, args.batch)
    return result


def table(report: dict) -> str:
    lines = [
        f"A * M_t in fp16 · {report['device']} · torch {report['versions']['torch']} · {report['date']}",
        f"fp16 forwards on the CPU, batch {report['batch']} source + {report['batch']} target images "
        f"(art_painting -> cartoon), random init, then the paper's recipe; largest |x|, fp16 max 65504",
        f"{'px':>4s} {'when':18s} {'conv':>4s} {'max|A|':>8s} {'max|M_t|':>9s} {'max|A*M_t|':>11s} "
        f"{'p99.99':>9s} {'>65504':>7s} {'headroom':>9s}",
    ]
    for size, by_when in report["sizes"].items():
        for when, per_conv in by_when.items():
            for n, f in per_conv.items():
                lines.append(
                    f"{size:>4s} {when:18s} {n:>4} {f['max_a']:8.2f} {f['max_m']:9.2f} "
                    f"{f['max_product']:11.2f} {f['p99_99_product']:9.2f} {f['over_fp16']:7d} "
                    f"{FP16_MAX / max(f['max_product'], 1e-9):8.0f}x"
                )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/asha-tune-bench-cache"))
    p.add_argument("--sizes", default="64,128,224")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--limit", type=int, default=160, help="images per domain")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.manual_seed(0)
    report = {
        "device": device_name(torch.device("cpu")),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
        "batch": args.batch,
        "sizes": {},
    }
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"{size} px", file=sys.stderr, flush=True)
        report["sizes"][str(size)] = measure_size(size, args)
        if args.out:
            args.out.write_text(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
