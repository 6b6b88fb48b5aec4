"""Speed benchmark: asha-tune's trial against the authors' approach, on the CPU or one GPU.

    python benchmarks/speed.py --profile cpu --data-root PACS [--quickstart]
    python benchmarks/speed.py --profile gpu --data-root PACS [--tile]

Writes the JSON (`--out`) and the table (`--table`; printed at the end too) after every section,
so a timeout or a crash keeps every figure measured so far; a section that fails is recorded with
its error and the next one runs. Every figure carries the device and the versions it was measured
with (torch, CUDA, driver, Python). `--tile` repeats the images of a carried subset up to the real
domain sizes (speed does not depend on image content); decode figures are then scaled from the
subset and say so. ASHA_TUNE_BENCH_FAIL=name,... makes the named sections fail on purpose (to
check that the others still run), e.g. "variant fp16 NCHW".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asha_tune.trial.config import Runtime, TrialConfig
from asha_tune.trial.decoding import DomainImages
from asha_tune.trial.devices import versions
from asha_tune.trial.training import Trial, resolve_device
from benchmarks.authors import time_authors

REPO = Path(__file__).resolve().parents[1]
FULL_SIZES = {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}
FAIL_ENV = "ASHA_TUNE_BENCH_FAIL"
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
    compile: bool = False  # the cold-cache torch.compile variant: last, skipped when time is short


PROFILES = {
    "cpu": Profile(64, 32, 256, 3, 1, 6, 3, (), False, "scaled protocol: 64 px, batch 32, 3 epochs"),
    "gpu": Profile(
        224, 128, 512, 30, 3, 10, 5, (1, 2, 4), True, "paper protocol: 224 px, batch 128, 30 epochs", True
    ),
}
COMPILE_NEEDS_S = 150.0  # a cold torch.compile of ResNet-18's training step, and its timed epochs

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


def fresh_memory(device: torch.device) -> None:
    """Free what earlier trials cached and restart the peaks, so each figure is its own trial's."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def memory(device: torch.device) -> dict:
    """Peaks since `fresh_memory`: what tensors held, and what torch's allocator reserved from the
    GPU (what the trial really takes, less the CUDA context: see `cuda_context`)."""
    if device.type != "cuda":
        return {"peak_mib": float("nan"), "peak_reserved_mib": float("nan")}
    return {
        "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20,
        "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
    }


def cuda_context(device: torch.device) -> dict:
    """Device memory in use outside torch's allocator: this process's CUDA context (its cuBLAS and
    cuDNN workspaces included, once a trial has run) and any other process on the GPU."""
    if device.type != "cuda":
        return {}
    torch.zeros(1, device=device)
    free, total = torch.cuda.mem_get_info(device)
    return {
        "outside_torch_mib": (total - free - torch.cuda.memory_reserved(device)) / 2**20,
        "device_total_mib": total / 2**20,
    }


def throughput(trial: Trial, reps: int) -> dict:
    """Training and evaluation img/s after one warm-up epoch (the first pays for cuDNN's search)."""
    device = trial.device
    target = next(iter(trial.data.targets.values()))
    trial.train_epoch()
    trial.evaluate(target)
    fresh_memory(device)
    start = sync(device)
    for _ in range(reps):
        trial.train_epoch()
    trained = sync(device)
    for _ in range(reps):
        trial.evaluate(target)
    evaluated = sync(device)
    return {
        "train_img_s": reps * len(trial.data.source) / (trained - start),
        "eval_img_s": reps * len(target) / (evaluated - trained),
        **memory(device),
    }


def full_trial(config: TrialConfig, runtime: Runtime, tile: bool) -> dict:
    """One whole trial as a sweep runs it, with a checkpoint written after every epoch."""
    fresh_memory(resolve_device(runtime.device))
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
    return {
        "wall_s": end - start,
        "setup_s": built - start,
        "data_s": trial.data.load_seconds,
        "train_s": sum(m["time_train"] for m in h),
        "eval_s": sum(m["time_eval"] for m in h),
        "checkpoint_s": checkpoint_s,
        "final_target_acc": h[-1]["target_acc"],
        "device": trial.device_name,
        **memory(trial.device),
        **cuda_context(trial.device),
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
    with tempfile.TemporaryDirectory() as folder:
        logs = [Path(folder) / f"worker-{i}.err" for i in range(k)]
        start = time.perf_counter()
        procs = []
        for log in logs:
            with log.open("w") as err:
                procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True))
        outputs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
        results = [
            worker_result(p.returncode, out, log) for p, out, log in zip(procs, outputs, logs, strict=True)
        ]
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        raise RuntimeError(f"{len(failed)} of {k} sharing workers failed: {failed[0]}")
    return {
        "trials": k,
        "wall_s": wall,
        "trials_per_hour": k * 3600 / wall,
        "peak_mib_per_trial": max(r["peak_mib"] for r in results),
        "peak_reserved_mib_per_trial": max(r["peak_reserved_mib"] for r in results),
        # Each process has its own CUDA context on the GPU, besides what its allocator reserved.
        "outside_torch_mib_per_trial": max(r.get("outside_torch_mib", float("nan")) for r in results),
    }


def worker_result(returncode: int, stdout: str, log: Path) -> dict:
    """A sharing worker's JSON line, or its error (the last line of its stderr) if it gave none."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if returncode == 0 and lines:
        return json.loads(lines[-1])
    err = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return {"error": f"exit {returncode}: {err[-1] if err else 'no output'}"}


def variants(profile: Profile, runtime: Runtime, tile: bool) -> dict[str, Callable[[], dict]]:
    """What each speed option buys on the baseline trial: name -> its measurement, run in order.

    cudnn.benchmark is measured here, not turned on in trials: whether its search pays within a
    trial (and with several trials on one GPU) is for this figure to say, on a GPU.
    """

    def measure(setup: Callable[[Trial], None] | None = None, **train: Any) -> Callable[[], dict]:
        def run() -> dict:
            trial = make_trial(trial_config(profile, {"mode": "baseline"}, **train), runtime, tile)
            if setup:
                setup(trial)
            return {
                **throughput(trial, profile.reps),
                "amp": str(trial.amp),
                "channels_last": trial.channels_last,
            }

        return run

    def nchw(trial: Trial) -> None:
        trial.channels_last = False
        trial.model.to(memory_format=torch.contiguous_format)

    def cudnn_benchmark() -> dict:
        torch.backends.cudnn.benchmark = True
        try:
            return measure(precision="fp16")()
        finally:
            torch.backends.cudnn.benchmark = False

    return {
        "fp16 channels_last (default)": measure(precision="fp16"),
        "fp16 NCHW": measure(nchw, precision="fp16"),
        "fp16 cudnn.benchmark": cudnn_benchmark,
        "bf16 channels_last": measure(precision="bf16"),
        "fp32 channels_last": measure(precision="fp32"),
        "eval batch 2048": measure(precision="fp16", eval_batch_size=2048),
    }


def compiled(profile: Profile, runtime: Runtime, tile: bool) -> dict:
    """torch.compile on a cold cache; with_compile_s includes the compilation."""
    trial = make_trial(trial_config(profile, MODES["random conv 1"]), runtime, tile)
    trial.model = torch.compile(trial.model)
    start = time.perf_counter()
    figures = throughput(trial, profile.reps)
    return {**figures, "with_compile_s": time.perf_counter() - start}


def authors(
    profile: Profile, args: argparse.Namespace, device: torch.device, warm_wall_s: float | None
) -> dict:
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
    figures = {**asdict(timing), "extrapolated_trial_s": seconds}
    if warm_wall_s:
        figures["speedup"] = seconds / warm_wall_s
    return figures


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
        lines = done.stderr.strip().splitlines() or ["no output"]
        raise RuntimeError(f"exit {done.returncode}: {lines[-1]}")
    return {"wall_s": wall, "best": done.stdout.strip().splitlines()[-1]}


def commit() -> str | None:
    """This checkout's commit; a tree copied without .git (a device machine) may carry the one
    prepare_device.sh recorded; None where neither is there (git itself may be missing)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, timeout=10
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    recorded = REPO / ".device-data" / "commit.txt"
    return f"{recorded.read_text().strip()} (as prepared)" if recorded.is_file() else None


class Recorder:
    """The report, written (JSON and table) after every section, each section guarded: an error
    is recorded as `{"error": ...}` and the benchmark goes on."""

    def __init__(self, report: dict, out: Path, table_out: Path | None):
        self.report, self.out, self.table_out = report, out, table_out
        self.failing = {name.strip() for name in os.environ.get(FAIL_ENV, "").split(",") if name.strip()}
        self.write()

    def run(self, name: str, measure: Callable[[], Any], *where: str) -> Any:
        """Measure one section into report[where...] (default report[name]); None if it failed."""
        say(name)
        start = time.perf_counter()
        try:
            if name in self.failing:
                raise RuntimeError(f"deliberate failure ({FAIL_ENV})")
            value = measure()
        except Exception as err:  # recorded, never hidden, and the next section runs
            text = str(err).strip().splitlines()
            value = {"error": f"{type(err).__name__}: {text[0] if text else ''}"[:500]}
            say(f"  failed: {value['error']}")
        self._put(where or (name,), value)
        self.report.setdefault("section_s", {})[name] = time.perf_counter() - start
        self.write()
        return None if isinstance(value, dict) and "error" in value else value

    def skip(self, name: str, why: str, *where: str) -> None:
        say(f"{name}: skipped ({why})")
        self._put(where or (name,), {"skipped": why})
        self.write()

    def _put(self, where: tuple[str, ...], value: Any) -> None:
        node = self.report
        for key in where[:-1]:
            node = node.setdefault(key, {})
        node[where[-1]] = value

    def write(self) -> None:
        tmp = self.out.with_suffix(self.out.suffix + ".tmp")
        tmp.write_text(json.dumps(self.report, indent=2))
        tmp.replace(self.out)
        if self.table_out:
            self.table_out.write_text(table(self.report) + "\n")


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)  # progress; the table goes to stdout


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=PROFILES, default="cpu")
    p.add_argument("--data-root", type=Path, default=os.environ.get("ASHA_TUNE_DATA_ROOT"))
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "asha-tune-bench-cache")
    p.add_argument("--device", default="auto")
    p.add_argument("--tile", action="store_true", help="repeat a carried subset to the full domain sizes")
    p.add_argument("--quickstart", action="store_true", help="also time the quickstart sweep (needs Ray)")
    p.add_argument("--skip-authors", action="store_true")
    p.add_argument(
        "--variants", action=argparse.BooleanOptionalAction, default=None, help="default: the profile's"
    )
    p.add_argument("--sharing", help="trials at once, e.g. 1,2,4 (default: the profile's; none on the CPU)")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="the torch.compile variant"
    )
    p.add_argument(
        "--budget-s",
        type=float,
        help="seconds this run may take: the optional compile variant is skipped if it would not fit",
    )
    p.add_argument("--out", type=Path, default=Path("benchmark.json"))
    p.add_argument("--table", type=Path, help="also write the table here after every section")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    began = time.perf_counter()
    args = parse_args()
    profile = PROFILES[args.profile]
    runtime = Runtime(data_root=args.data_root, cache_dir=args.cache_dir, device=args.device)
    if args.worker:  # one trial of the sharing measurement
        print(json.dumps(full_trial(trial_config(profile, MODES["random conv 1"]), runtime, args.tile)))
        return
    device = resolve_device(args.device)
    report: dict = {
        "device": device_name(device),
        "torch": torch.__version__,
        "versions": versions(),
        "profile": args.profile,
        "protocol": profile.label,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "tiled": args.tile,
        "commit": commit(),
        "cuda_context": cuda_context(device),
    }
    rec = Recorder(report, args.out, args.table)
    on_gpu = device.type == "cuda"
    sharing_ks = (
        [int(k) for k in args.sharing.split(",")] if args.sharing else list(profile.sharing if on_gpu else ())
    )
    run_variants = profile.variants and on_gpu if args.variants is None else args.variants
    run_compile = profile.compile and on_gpu if args.compile is None else args.compile

    cold_runtime = _cold(runtime, args.cache_dir)
    cold = rec.run(
        "full trial, cold cache",
        lambda: full_trial(trial_config(profile, MODES["random conv 1"]), cold_runtime, args.tile),
        "cold_trial",
    )
    if cold and args.tile:  # the decode ran on the subset: scale it to the full domains
        _scale_to_full_domains(cold, args.data_root)
        rec.write()
    for name, shaping in MODES.items():
        rec.run(
            f"mode {name}",
            lambda shaping=shaping: throughput(
                make_trial(trial_config(profile, shaping), runtime, args.tile), profile.reps
            ),
            "modes",
            name,
        )
    warm = rec.run(
        "full trial, warm cache",
        lambda: full_trial(trial_config(profile, MODES["random conv 1"]), runtime, args.tile),
        "warm_trial",
    )
    for k in sharing_ks:
        rec.run(f"sharing {k}", lambda k=k: sharing(k, args), "sharing", str(k))
    if run_variants:
        for name, measure in variants(profile, runtime, args.tile).items():
            rec.run(f"variant {name}", measure, "variants", name)
    if not args.skip_authors:
        rec.run(
            "the authors' approach",
            lambda: authors(profile, args, device, warm and warm["wall_s"]),
            "authors",
        )
    if run_compile:
        left = None if args.budget_s is None else args.budget_s - (time.perf_counter() - began)
        _compile_variant(rec, left, lambda: compiled(profile, runtime, args.tile))
    if args.quickstart:
        rec.run(
            "quickstart sweep", lambda: quickstart_sweep(args.data_root, args.cache_dir), "quickstart_sweep"
        )
    report["total_s"] = time.perf_counter() - began
    rec.write()
    print(table(report))


def _cold(runtime: Runtime, cache_dir: Path) -> Runtime:
    """A cache folder without this domain decodes now: the cold trial, and every later trial warm.
    One that holds it already is left for the warm trials; the cold one decodes into a new folder."""
    if cache_dir.is_dir() and any(cache_dir.glob("pacs-art_painting-*")):
        return runtime.model_copy(update={"cache_dir": Path(tempfile.mkdtemp(prefix="asha-cold-"))})
    return runtime


def _scale_to_full_domains(cold: dict, data_root: Path) -> None:
    """The cold trial's decode time as it would be on the full domains (a tiled run decodes a subset)."""
    from asha_tune.trial.datasets import list_dataset

    listed = list_dataset("pacs", data_root, ["art_painting", "cartoon"])
    decoded = sum(len(files) for files in listed.domains.values())
    cold["data_s_scaled_to_full_domains"] = (
        cold["data_s"] * (FULL_SIZES["art_painting"] + FULL_SIZES["cartoon"]) / decoded
    )


def _compile_variant(rec: Recorder, left: float | None, measure: Callable[[], Any]) -> None:
    """The torch.compile variant, skipped when fewer seconds than it needs are `left` of --budget-s."""
    name = "torch.compile, random conv 1 (cold cache)"
    if left is not None and left < COMPILE_NEEDS_S:
        rec.skip(
            f"variant {name}",
            f"{left:.0f} s left of --budget-s, it needs ~{COMPILE_NEEDS_S:.0f}",
            "variants",
            name,
        )
    else:
        rec.run(f"variant {name}", measure, "variants", name)


def _failed(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "missing"
    if "error" in value:
        return f"failed: {value['error']}"
    if "skipped" in value:
        return f"skipped: {value['skipped']}"
    return None


def table(r: dict) -> str:
    """The report as text; sections not measured yet are left out, failed ones say why."""
    lines = [*_header_lines(r), "", *_mode_lines(r), "", *_trial_lines(r), *_authors_lines(r)]
    lines += [*_sharing_lines(r), *_variant_lines(r)]
    if "quickstart_sweep" in r:
        q = r["quickstart_sweep"]
        lines.append(f"{'quickstart sweep':24s} " + (_failed(q) or f"{q['wall_s']:.0f} s wall"))
    if "total_s" in r:
        lines.append(f"\nbenchmark total {r['total_s']:.0f} s")
    return "\n".join(lines)


def _header_lines(r: dict) -> list[str]:
    """The device, the software stack, the commit and the trial measured."""
    v = r.get("versions") or {}
    stack = f"torch {r['torch']}"
    if v:
        stack += (
            f" (CUDA {v.get('torch_cuda') or 'none'}, cuDNN {v.get('cudnn') or 'none'}) · driver "
            f"{v.get('driver') or 'none'} · Python {v.get('python')}"
        )
    lines = [
        f"asha-tune speed benchmark · {r['device']} · {stack} · commit {r['commit']} · {r['date']}",
        f"trial: art_painting -> cartoon, {r['protocol']}"
        + (" (subset tiled to full domains)" if r["tiled"] else ""),
    ]
    context = r.get("cuda_context") or {}
    if context:
        lines.append(
            f"device memory {context['device_total_mib']:.0f} MiB; outside torch's allocator at start "
            f"(CUDA context, other processes): {context['outside_torch_mib']:.0f} MiB"
        )
    return lines


def _mode_lines(r: dict) -> list[str]:
    lines = [f"{'mode':24s} {'train img/s':>12s} {'eval img/s':>11s} {'peak MiB':>9s} {'reserved':>9s}"]
    for name, m in (r.get("modes") or {}).items():
        if why := _failed(m):
            lines.append(f"{name:24s} {why}")
        else:
            lines.append(
                f"{name:24s} {m['train_img_s']:12.0f} {m['eval_img_s']:11.0f} {m['peak_mib']:9.0f} "
                f"{m.get('peak_reserved_mib', float('nan')):9.0f}"
            )
    return lines


def _trial_lines(r: dict) -> list[str]:
    """The warm and the cold full trial, where measured."""
    lines = []
    for key, label in (("warm_trial", "full trial, warm cache"), ("cold_trial", "full trial, cold cache")):
        if key not in r:
            continue
        t = r[key]
        if why := _failed(t):
            lines.append(f"{label:24s} {why}")
            continue
        lines.append(
            f"{label:24s} wall {t['wall_s']:7.1f} s = setup {t['setup_s']:.1f} (data {t['data_s']:.1f}) "
            f"+ train {t['train_s']:.1f} + eval {t['eval_s']:.1f} + checkpoints {t['checkpoint_s']:.1f}"
            + (
                f" · peak {t['peak_mib']:.0f} MiB, reserved {t['peak_reserved_mib']:.0f} MiB"
                if t.get("peak_mib") == t.get("peak_mib") and "peak_mib" in t
                else ""
            )
        )
        if "data_s_scaled_to_full_domains" in t:
            lines.append(
                f"{'':24s} cold data scaled to full domains: {t['data_s_scaled_to_full_domains']:.1f} s"
            )
    return lines


def _authors_lines(r: dict) -> list[str]:
    if "authors" not in r:
        return []
    a = r["authors"]
    if why := _failed(a):
        return [f"{'authors approach':24s} {why}"]
    lines = [
        f"{'authors approach':24s} {a['extrapolated_trial_s']:7.1f} s per trial, EXTRAPOLATED from "
        f"{a['train_steps_timed']} train steps ({a['seconds_per_train_step']:.3f} s each) and "
        f"{a['eval_batches_timed']} eval batches ({a['seconds_per_eval_batch']:.3f} s each)"
    ]
    if "speedup" in a:
        lines.append(f"{'speedup':24s} x{a['speedup']:.1f} (authors extrapolated / asha-tune warm trial)")
    return lines


def _sharing_lines(r: dict) -> list[str]:
    lines = []
    sharing_runs = r.get("sharing") or {}
    for k, s in sharing_runs.items() if isinstance(sharing_runs, dict) else enumerate(sharing_runs):
        if why := _failed(s):
            lines.append(f"{'sharing one device':24s} {k} at once: {why}")
            continue
        lines.append(
            f"{'sharing one device':24s} {s['trials']} at once: {s['wall_s']:.1f} s wall, "
            f"{s['trials_per_hour']:.0f} trials per hour, peak {s['peak_mib_per_trial']:.0f} MiB "
            f"(reserved {s.get('peak_reserved_mib_per_trial', float('nan')):.0f}, outside torch "
            f"{s.get('outside_torch_mib_per_trial', float('nan')):.0f}) per trial"
        )
    return lines


def _variant_lines(r: dict) -> list[str]:
    lines = []
    for name, value in (r.get("variants") or {}).items():
        if why := _failed(value):
            lines.append(f"{'variant':10s} {name:42s} {why}")
        else:
            compile_s = (
                f"  (with compile {value['with_compile_s']:.0f} s)" if "with_compile_s" in value else ""
            )
            lines.append(
                f"{'variant':10s} {name:42s} train {value['train_img_s']:7.0f} img/s  "
                f"eval {value['eval_img_s']:7.0f} img/s{compile_s}"
            )
    return lines


if __name__ == "__main__":
    main()
