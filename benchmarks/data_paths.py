"""Data paths benchmark: the whole domain in memory against batches streamed from the disk cache.

    python benchmarks/data_paths.py [--images 12000] [--budget-mib 128] [--out results.json]

A synthetic `folder` dataset (one domain of noisy JPEGs) is decoded into the memory-mapped
cache (asha_tune/trial/cache.py) with 1 and 2 workers; its training images are larger than the
budget, so `choose_path` streams them. Then, in this process: images per second of an epoch's
batches from a private in-memory copy (what a device copy is on the CPU) and from the stream,
with the file's pages evicted first (cold) and resident (warm), without and with a training
step (augment + ResNet-18 at the image size). Last, host memory (PSS, /proc/<pid>/smaps_rollup)
of 1 and 4 reader processes at once, each reading two epochs by one path, measured while all
are alive. Prints a table (last) and writes JSON. Figures are for the machine named.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asha_tune.trial import augmentation, cache, decoding
from asha_tune.trial.datasets import list_dataset
from asha_tune.trial.model import build_model
from asha_tune.trial.streaming import BatchStream, choose_path, images_bytes
from benchmarks.probe import cpu_model, load_average, memory_kib

CLASSES = 10
SOURCE_PX = 80  # the synthetic JPEGs' side


def cpu_name() -> str:
    return f"CPU {cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")


def make_dataset(root: Path, count: int) -> Path:
    """`count` noisy JPEGs in one domain `d` of 10 classes (noise keeps them from compressing)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "d" / f"class_{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, 3)
        pixels = np.clip(base + rng.normal(0, 40, (SOURCE_PX, SOURCE_PX, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def evict(entry: cache.CacheEntry) -> None:
    """Drop the cache files' pages from the page cache (they must be clean and unmapped)."""
    for path in (entry.train_file, entry.test_file):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def epoch_order(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class Step:
    """One training step as a trial takes it on the CPU: augment, ResNet-18, SGD."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.model = build_model("none", CLASSES)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, fused=True)
        self.generator = torch.Generator().manual_seed(0)
        self.loss = torch.nn.CrossEntropyLoss()

    def __call__(self, batch: torch.Tensor) -> None:
        x = augmentation.augment(batch, self.image_size, self.generator)
        y = torch.zeros(len(batch), dtype=torch.long)
        loss = self.loss(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def timed(batches, step: Step | None) -> np.ndarray:
    """(wall, CPU) seconds of a pass; CPU counts every thread of this process (the gather's too),
    so it holds up on a loaded machine where wall time does not."""
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        if step is not None:
            step(batch)
    return np.array([time.perf_counter() - wall, time.process_time() - cpu])


PATHS = ("stream (cold)", "stream (warm)", "in memory", "in memory, index_select")


def throughput(entry: cache.CacheEntry, labels, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Images per second (wall) and CPU ms per 100 images of each path, data only and with a
    training step. The paths take turns over `args.rounds` rounds (cold, warm, in memory, ...),
    so a shared machine's changing load weighs on each alike; a cold pass first evicts the cache
    file's pages."""
    n = entry.count
    step = Step(args.image_size)
    step(torch.zeros((args.batch, 3, entry.base, entry.base), dtype=torch.uint8))  # warm-up
    copy = cache.open_cache(entry, labels).train.clone()  # in memory: a private copy, as on a device
    gc.collect()
    # One untimed pass of each: the first pass of a process pays page faults for the malloc
    # arenas its batches then reuse (about 50 us each on this VM), a cost of start-up, not of a path.
    warm = cache.open_cache(entry, labels).train
    for batches in (
        BatchStream(warm).batches(epoch_order(n), args.batch),
        (copy[i] for i in epoch_order(n).split(args.batch)),
    ):
        timed(batches, None)
    del warm
    gc.collect()
    out: dict[str, dict[str, float]] = {}
    for label, with_step, count in (
        ("data only", None, n),
        ("train step", step, args.train_steps * args.batch),
    ):
        seconds = {path: np.zeros(2) for path in PATHS}
        for r in range(args.rounds):
            order = epoch_order(n, seed=r)[:count]
            evict(entry)
            train = cache.open_cache(entry, labels).train  # a fresh view, nothing of it mapped yet
            seconds["stream (cold)"] += timed(BatchStream(train).batches(order, args.batch), with_step)
            seconds["stream (warm)"] += timed(BatchStream(train).batches(order, args.batch), with_step)
            batches = order.split(args.batch)
            seconds["in memory"] += timed((copy[i] for i in batches), with_step)  # as training.py
            gathered = (torch.index_select(copy, 0, i) for i in batches)  # the stream's gather
            seconds["in memory, index_select"] += timed(gathered, with_step)
            del train
            gc.collect()  # unmapped, so the next round's eviction can drop its pages
        images = args.rounds * count
        for path, (wall, cpu) in seconds.items():
            out[f"{label}, {path}"] = {"img_s": images / wall, "cpu_ms_per_100": 1e5 * cpu / images}
    return out


# --- reader processes, for host memory -----------------------------------------------------


def reader(args: argparse.Namespace) -> None:
    """One trial's reading: wait for the start, read two epochs by one path, wait to be measured."""
    signals = Path(args.signals)
    imports = memory_kib(os.getpid()) or {}  # torch and the model code, before any data
    entry = cache.CacheEntry(
        Path(args.entry), args.count, decoding.train_base_size(args.image_size), args.image_size
    )
    train = cache.open_cache(entry, [0] * args.count).train
    if args.reader == "memory":
        source = train.clone()  # the device copy (here: private host memory)
        del train
        gc.collect()
        epochs = lambda order: (source[i] for i in order.split(args.batch))  # noqa: E731
    else:
        stream = BatchStream(train)
        epochs = lambda order: stream.batches(order, args.batch)  # noqa: E731
    (signals / f"ready.{os.getpid()}").touch()
    while not (signals / "go").exists():
        time.sleep(0.02)
    start = time.perf_counter()
    for epoch in range(2):
        for batch in epochs(epoch_order(args.count, epoch)):
            batch.float().mean()  # a touch of compute per batch
    seconds = time.perf_counter() - start
    done = {"img_s": 2 * args.count / seconds, "imports_anon_mib": imports.get("Pss_Anon", 0) / 1024}
    (signals / f"done.{os.getpid()}").write_text(json.dumps(done))
    while not (signals / "exit").exists():
        time.sleep(0.02)


def wait_files(folder: Path, prefix: str, k: int, timeout: float = 300) -> list[Path]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(folder.glob(prefix + ".*"))
        if len(found) >= k:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"{k} readers did not report {prefix}")


def memory(entry: cache.CacheEntry, path: str, k: int, args: argparse.Namespace) -> dict:
    """PSS of `k` readers of one path, all alive, after each read two epochs."""
    signals = Path(tempfile.mkdtemp(prefix="asha-readers-"))
    command = [
        sys.executable, __file__, "--reader", path, "--entry", str(entry.folder), "--count", str(entry.count),
        "--image-size", str(args.image_size), "--batch", str(args.batch), "--signals", str(signals),
    ]  # fmt: skip
    procs = [subprocess.Popen(command, cwd=REPO) for _ in range(k)]
    try:
        wait_files(signals, "ready", k)
        (signals / "go").touch()
        done = wait_files(signals, "done", k)
        reports = [json.loads(p.read_text()) for p in done]
        per = [memory_kib(p.pid) or {} for p in procs]
        (signals / "exit").touch()
        for p in procs:
            p.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(signals, ignore_errors=True)
    mib = {key: sum(m.get(key, 0) for m in per) / 1024 for key in ("Pss", "Pss_Anon", "Pss_File", "Rss")}
    return {
        "trials": k,
        "path": path,
        **mib,
        "imports_anon_mib": sum(r["imports_anon_mib"] for r in reports) / k,
        "img_s_each": sum(r["img_s"] for r in reports) / k,
        "load": load_average(),
    }


def table(r: dict) -> str:
    d = r["dataset"]
    lines = [
        f"asha-tune data paths benchmark · {r['cpu']} · torch {r['torch']} · commit {r['commit']} · "
        f"{r['date']}",
        f"dataset: synthetic folder, {d['images']:,} JPEGs {SOURCE_PX}x{SOURCE_PX}, cached at "
        f"{d['image_size']} px (train {d['base']} px): {d['train_mib']:.0f} MiB train + "
        f"{d['test_mib']:.0f} MiB test images",
        f"budget {r['budget_mib']} MiB -> {r['decision']}",
        "",
        f"{'cache build':38}{'img/s':>8}{'wall s':>9}",
    ]
    for b in r["build"]:
        lines.append(f"  {b['workers']} worker(s){'':26}{b['img_s']:8.0f}{b['seconds']:9.1f}")
    lines += [
        "",
        f"{'one trial, batch ' + str(r['batch']) + ', paths in turn':38}{'img/s':>8}{'CPU ms/100 img':>16}",
    ]
    for name, value in r["throughput"].items():
        lines.append(f"  {name:36}{value['img_s']:8.0f}{value['cpu_ms_per_100']:16.2f}")
    lines += [
        "",
        f"{'host memory, two epochs read':38}{'PSS MiB':>8}{'/trial':>8}{'anon':>7}{'file':>7}"
        f"{'imports':>9}{'img/s each':>12}{'load':>6}",
    ]
    for m in r["memory"]:
        k = m["trials"]
        name = f"  {'in memory' if m['path'] == 'memory' else 'stream'}, {k} trial(s) at once"
        lines.append(
            f"{name:38}{m['Pss']:8.0f}{m['Pss'] / k:8.0f}{m['Pss_Anon'] / k:7.0f}{m['Pss_File'] / k:7.0f}"
            f"{m['imports_anon_mib']:9.0f}{m['img_s_each']:12.0f}{m['load']:6.1f}"
        )
    lines.append("(per trial: anon and file parts of PSS; imports: anon PSS after importing, before data)")
    lines.append(f"load (1 min) at start {r['load_start']:.1f}, at end {r['load_end']:.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--budget-mib", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=5, help="per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    # A reader process (internal).
    parser.add_argument("--reader", choices=("memory", "stream"))
    parser.add_argument("--entry")
    parser.add_argument("--count", type=int)
    parser.add_argument("--signals")
    args = parser.parse_args()
    if args.reader:
        return reader(args)

    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731  (progress; the table goes to stdout)
    report: dict = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "batch": args.batch,
        "budget_mib": args.budget_mib,
        "load_start": load_average(),
    }
    work = Path(tempfile.mkdtemp(prefix="asha-data-paths-", dir=os.environ.get("TMPDIR", "/tmp")))
    say(f"writing {args.images} JPEGs under {work}")
    files = list_dataset("folder", make_dataset(work / "data", args.images))["d"]
    report["build"] = []
    for workers in (1, 2):
        say(f"decoding with {workers} worker(s)")
        _, built = cache.load_cached_domain(
            files, args.image_size, work / f"cache{workers}", "folder", workers
        )
        report["build"].append(
            {"workers": workers, "seconds": built.seconds, "img_s": built.decoded / built.seconds}
        )
    entry = built.entry
    train_bytes = images_bytes(entry.count, entry.base)
    decision = choose_path(train_bytes, args.budget_mib * 2**20)
    report["decision"] = str(decision)
    report["dataset"] = {
        "images": entry.count,
        "image_size": args.image_size,
        "base": entry.base,
        "train_mib": train_bytes / 2**20,
        "test_mib": images_bytes(entry.count, entry.size) / 2**20,
    }
    assert decision.kind == "stream", "the synthetic data set must exceed the budget"
    say("throughput")
    report["throughput"] = throughput(entry, files.labels, args)
    report["memory"] = []
    for path in ("memory", "stream"):
        for k in (1, 4):
            say(f"memory: {k} {path} reader(s)")
            report["memory"].append(memory(entry, path, k, args))
    report["load_end"] = load_average()
    shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    print(table(report))


if __name__ == "__main__":
    main()
