"""Speed benchmark: asha-tune's trial against the authors' approach, on the CPU or one GPU.

    python benchmarks/speed.py --profile cpu --data-root PACS [--quickstart]
    python benchmarks/speed.py --profile gpu --data-root PACS [--tile]

Prints a table (last) and writes JSON. Every figure carries the device it was measured on.
`--tile` repeats the images of a carried subset up to the real domain sizes (speed does not
depend on image content); decode figures are then scaled from the subset and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asha_tune.trial.config import Runtime, TrialConfig
from asha_tune.trial.data import DomainImages
from asha_tune.trial.training import Trial, resolve_device
from benchmarks.authors import time_authors  # noqa: E402

FULL_SIZES = {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}
EVERY_3 = [1, 4, 7, 10, 16, 19]


@dataclass(frozen=True)
class Profile:
    image_size: int
    batch: int
    eval_batch: int
    epochs: int
    reps: int
    authors_steps: int
    authors_eval: int
    sharing: tuple[int, ...]
    variants: bool
    label: str


PROFILES = {
    "cpu": Profile(64, 32, 256, 3, 1, 6, 3, (), False, "scaled protocol: 64 px, batch 32, 3 epochs"),
    "gpu": Profile(
        224, 128, 512, 30, 3, 10, 5, (1, 2, 4), True, "paper protocol: 224 px, batch 128, 30 epochs"
    ),
}

MODES = {
    "baseline": {"mode": "baseline"},
    "random conv 1": {"mode": "random", "convs": [1], "p0": 0.7},
    "random every-3": {"mode": "random", "convs": EVERY_3, "p0": 0.7},
    "target conv 4": {"mode": "target", "convs": [4]},
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"CPU {model} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def trial_config(profile: Profile, shaping: dict, **train) -> TrialConfig:
    return TrialConfig.model_validate(
        {
            "data": {"source": "art_painting", "targets": ["cartoon"], "image_size": profile.image_size},
            "shaping": shaping,
            "train": {
                "epochs": profile.epochs,
                "batch_size": profile.batch,
                "eval_batch_size": profile.eval_batch,
                "weights": "none",
                **train,
            },
        }
    )


def tiled(images: DomainImages, n: int) -> DomainImages:
    index = torch.arange(n, device=images.labels.device) % len(images)
    return DomainImages(
        images.train[index] if len(images.train) else images.train,
        images.test[index] if len(images.test) else images.test,
        images.labels[index],
    )


def make_trial(config: TrialConfig, runtime: Runtime, tile: bool) -> Trial:
    trial = Trial(config, runtime)
    if tile:
        d, data = config.data, trial.data
        oracle = data.val is data.targets  # the reported sets select: keep them one object
        data.source = tiled(data.source, FULL_SIZES[d.source])
        data.source_positions = torch.arange(FULL_SIZES[d.source])  # index pairing as on full PACS
        data.source_sizes = (FULL_SIZES[d.source],)  # one source domain, tiled
        data.targets = {t: tiled(v, FULL_SIZES[t]) for t, v in data.targets.items()}
        data.val = data.targets if oracle else data.val
        if data.adaptation is not None:
            data.adaptation = tiled(data.adaptation, FULL_SIZES[d.targets[0]])
    return trial


def throughput(trial: Trial, reps: int) -> dict:
    """Training and evaluation img/s after one warm-up epoch (the first pays for cuDNN's search)."""
    device = trial.device
    target = next(iter(trial.data.targets.values()))
    trial.train_epoch()
    trial.evaluate(target)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = sync(device)
    for _ in range(reps):
        trial.train_epoch()
    trained = sync(device)
    for _ in range(reps):
        trial.evaluate(target)
    evaluated = sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {
        "train_img_s": reps * len(trial.data.source) / (trained - start),
        "eval_img_s": reps * len(target) / (evaluated - trained),
        "peak_mib": peak,
    }


def full_trial(config: TrialConfig, runtime: Runtime, tile: bool) -> dict:
    """One whole trial as a sweep runs it, with a checkpoint written after every epoch."""
    start = time.perf_counter()
    trial = make_trial(config, runtime, tile)
    built = sync(trial.device)
    checkpoint_s = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(config.train.epochs):
            trial.run_epoch()
            saving = time.perf_counter()
            torch.save(trial.state(), Path(folder) / "trial.pt")
            checkpoint_s += time.perf_counter() - saving
    end = sync(trial.device)
    h = trial.history
    peak = (
        torch.cuda.max_memory_allocated(trial.device) / 2**20 if trial.device.type == "cuda" else float("nan")
    )
    return {
        "wall_s": end - start,
        "setup_s": built - start,
        "data_s": trial.data.load_seconds,
        "train_s": sum(m["time_train"] for m in h),
        "eval_s": sum(m["time_eval"] for m in h),
        "checkpoint_s": checkpoint_s,
        "final_target_acc": h[-1]["target_acc"],
        "peak_mib": peak,
    }


def sharing(k: int, args: argparse.Namespace) -> dict:
    """k trials at once on one device, each its own process, as fractional GPUs run them."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--profile",
        args.profile,
        "--data-root",
        str(args.data_root),
        "--cache-dir",
        str(args.cache_dir),
        "--device",
        args.device,
    ] + (["--tile"] if args.tile else [])
    start = time.perf_counter()
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    outputs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - start
    return {
        "trials": k,
        "wall_s": wall,
        "trials_per_hour": k * 3600 / wall,
        "peak_mib_per_trial": max(o["peak_mib"] for o in outputs),
    }


def variants(profile: Profile, runtime: Runtime, tile: bool) -> dict:
    """What each speed option buys, on the baseline trial."""
    base = {"mode": "baseline"}
    results = {}
    trial = make_trial(trial_config(profile, base), runtime, tile)
    results["fp16 channels_last (default)"] = throughput(trial, profile.reps)
    trial = make_trial(trial_config(profile, base), runtime, tile)
    trial.channels_last = False
    trial.model.to(memory_format=torch.contiguous_format)
    results["fp16 NCHW"] = throughput(trial, profile.reps)
    results["bf16 channels_last"] = throughput(
        make_trial(trial_config(profile, base, precision="bf16"), runtime, tile), profile.reps
    )
    results["fp32 channels_last"] = throughput(
        make_trial(trial_config(profile, base, precision="fp32"), runtime, tile), profile.reps
    )
    big_eval = trial_config(profile, base).model_copy(
        update={"train": trial_config(profile, base).train.model_copy(update={"eval_batch_size": 2048})}
    )
    results["eval batch 2048"] = throughput(make_trial(big_eval, runtime, tile), profile.reps)
    try:
        trial = make_trial(trial_config(profile, {"mode": "random", "convs": [1], "p0": 0.7}), runtime, tile)
        trial.model = torch.compile(trial.model)
        start = time.perf_counter()
        results["torch.compile, random conv 1"] = throughput(trial, profile.reps)
        results["torch.compile, random conv 1"]["with_compile_s"] = time.perf_counter() - start
    except Exception as err:  # report, do not hide
        results["torch.compile, random conv 1"] = {"error": str(err).splitlines()[0]}
    return results


def quickstart_sweep(data_root: Path, cache_dir: Path) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "ASHA_TUNE_DATA_ROOT": str(data_root),
            "ASHA_TUNE_CACHE_DIR": str(cache_dir),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "asha_tune.cli", "launch", "--space", "quickstart"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return {"wall_s": wall, "best": done.stdout.strip().splitlines()[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=PROFILES, default="cpu")
    p.add_argument("--data-root", type=Path, default=os.environ.get("ASHA_TUNE_DATA_ROOT"))
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "asha-tune-bench-cache")
    p.add_argument("--device", default="auto")
    p.add_argument("--tile", action="store_true", help="repeat a carried subset to the full domain sizes")
    p.add_argument("--quickstart", action="store_true", help="also time the quickstart sweep (needs Ray)")
    p.add_argument("--skip-authors", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmark.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    profile = PROFILES[args.profile]
    runtime = Runtime(data_root=args.data_root, cache_dir=args.cache_dir, device=args.device)
    if args.worker:  # one trial of the sharing measurement
        print(json.dumps(full_trial(trial_config(profile, MODES["random conv 1"]), runtime, args.tile)))
        return

    device = resolve_device(args.device)
    report: dict = {
        "device": device_name(device),
        "torch": torch.__version__,
        "profile": args.profile,
        "protocol": profile.label,
        "date": time.strftime("%Y-%m-%d"),
        "tiled": args.tile,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
        or None,
    }
    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731  (progress; the table goes to stdout)

    say("cold cache: full trial with decoding")
    cold_dir = Path(tempfile.mkdtemp(prefix="asha-cold-"))
    cold_runtime = runtime.model_copy(update={"cache_dir": cold_dir})
    report["cold_trial"] = full_trial(trial_config(profile, MODES["random conv 1"]), cold_runtime, args.tile)
    if args.tile:  # the decode ran on the subset: scale it to the full domains
        from asha_tune.trial.data import list_domain

        decoded = sum(len(list_domain(args.data_root, d).paths) for d in ("art_painting", "cartoon"))
        scale = (FULL_SIZES["art_painting"] + FULL_SIZES["cartoon"]) / decoded
        report["cold_trial"]["data_s_scaled_to_full_domains"] = report["cold_trial"]["data_s"] * scale
    say("throughput by mode")
    report["modes"] = {
        name: throughput(make_trial(trial_config(profile, shaping), runtime, args.tile), profile.reps)
        for name, shaping in MODES.items()
    }
    say("full trial, warm cache")
    report["warm_trial"] = full_trial(trial_config(profile, MODES["random conv 1"]), runtime, args.tile)
    if not args.skip_authors:
        say("the authors' approach")
        timing = time_authors(
            args.data_root,
            "art_painting",
            "cartoon",
            profile.image_size,
            profile.batch,
            [1],
            0.7,
            device,
            profile.authors_steps,
            profile.authors_eval,
            source_length=FULL_SIZES["art_painting"],
        )
        seconds = timing.extrapolate(
            profile.epochs, FULL_SIZES["art_painting"], FULL_SIZES["cartoon"], profile.batch
        )
        report["authors"] = {
            **asdict(timing),
            "extrapolated_trial_s": seconds,
            "speedup": seconds / report["warm_trial"]["wall_s"],
        }
    if device.type == "cuda":
        for k in profile.sharing:
            say(f"sharing: {k} trial(s) at once")
            report.setdefault("sharing", []).append(sharing(k, args))
        if profile.variants:
            say("variants")
            report["variants"] = variants(profile, runtime, args.tile)
    if args.quickstart:
        say("quickstart sweep")
        report["quickstart_sweep"] = quickstart_sweep(args.data_root, args.cache_dir)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(report))


def table(r: dict) -> str:
    lines = [
        f"asha-tune speed benchmark · {r['device']} · torch {r['torch']} · commit {r['commit']} "
        f"· {r['date']}",
        f"trial: art_painting -> cartoon, {r['protocol']}"
        + (" (subset tiled to full domains)" if r["tiled"] else ""),
        "",
        f"{'mode':24s} {'train img/s':>12s} {'eval img/s':>11s} {'peak MiB':>9s}",
    ]
    for name, m in r["modes"].items():
        lines.append(f"{name:24s} {m['train_img_s']:12.0f} {m['eval_img_s']:11.0f} {m['peak_mib']:9.0f}")
    lines.append("")
    for key, label in (("warm_trial", "full trial, warm cache"), ("cold_trial", "full trial, cold cache")):
        t = r[key]
        lines.append(
            f"{label:24s} wall {t['wall_s']:7.1f} s = setup {t['setup_s']:.1f} (data {t['data_s']:.1f}) "
            f"+ train {t['train_s']:.1f} + eval {t['eval_s']:.1f} + checkpoints {t['checkpoint_s']:.1f}"
        )
    if "data_s_scaled_to_full_domains" in r["cold_trial"]:
        lines.append(
            f"{'':24s} cold data scaled to full domains: "
            f"{r['cold_trial']['data_s_scaled_to_full_domains']:.1f} s"
        )
    if "authors" in r:
        a = r["authors"]
        lines.append(
            f"{'authors approach':24s} {a['extrapolated_trial_s']:7.1f} s per trial, EXTRAPOLATED from "
            f"{a['train_steps_timed']} train steps ({a['seconds_per_train_step']:.3f} s each) and "
            f"{a['eval_batches_timed']} eval batches ({a['seconds_per_eval_batch']:.3f} s each)"
        )
        lines.append(f"{'speedup':24s} x{a['speedup']:.1f} (authors extrapolated / asha-tune warm trial)")
    for s in r.get("sharing", []):
        lines.append(
            f"{'sharing one GPU':24s} {s['trials']} at once: {s['wall_s']:.1f} s wall, "
            f"{s['trials_per_hour']:.0f} trials per GPU-hour, "
            f"peak {s['peak_mib_per_trial']:.0f} MiB per trial"
        )
    for name, v in r.get("variants", {}).items():
        if "error" in v:
            lines.append(f"{'variant':10s} {name:32s} failed: {v['error']}")
        else:
            lines.append(
                f"{'variant':10s} {name:32s} train {v['train_img_s']:7.0f} img/s  "
                f"eval {v['eval_img_s']:7.0f} img/s"
            )
    if "quickstart_sweep" in r:
        q = r["quickstart_sweep"]
        lines.append(
            f"{'quickstart sweep':24s} " + (f"{q['wall_s']:.0f} s wall" if "wall_s" in q else q["error"])
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
