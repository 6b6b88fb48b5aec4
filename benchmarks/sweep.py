"""Sweep benchmark: how much of a sweep's slot time goes to training and evaluation.

    python benchmarks/sweep.py --data-root PACS [--baseline REV] [--rounds N] [--out FILE]

Runs real sweeps (real PACS from a warm decode cache, CPU, a local Ray, MLflow and Optuna in
sqlite), each in its own process, and reads what the trials themselves recorded (Ray's
result.json of every trial). Efficiency is the slot time spent in training and evaluation over
wall time x concurrent slots; the rest is broken into its parts, per trial. `--baseline REV[,REV]`
runs the same sweeps with the code of other commits (extracted with git archive), interleaved
with this tree's, so both see the same machine load. Every figure comes with the load it was
taken under (benchmarks/probe.py). Prints a table (last) and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.probe import TAG_ENV, Probe, cpu_model

PROFILES: dict[str, dict[str, Any]] = {
    # Every trial runs its whole budget, at least 10 s of compute on a 2-core machine: the
    # configuration the efficiency target is stated for.
    "long": {
        "data": {"limit_per_domain": 280},
        "search": {"num_trials": 16, "max_concurrent": 2},
        "scheduler": {"kind": "fifo"},
    },
    # The shipped quickstart space (ASHA stops weak trials after each epoch), 16 trials.
    "quickstart": {"search": {"num_trials": 16, "max_concurrent": 2}},
}
# Host memory with k trials at once: whole domains (no subset), one epoch each.
MEMORY_PROFILE = {
    "data": {"limit_per_domain": None},
    "train": {"epochs": 1},
    "search": {"algorithm": "random"},
    "scheduler": {"kind": "fifo"},
}

# Driver-side calls timed around the sweep (class, methods): MLflow and the Optuna study.
DRIVER_CALLS = {
    "tracking": (
        "asha_tune.sweep.callbacks",
        "TrackingCallback",
        ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error"),
    ),
    "study": (
        "asha_tune.sweep.searcher",
        "StudySearcher",
        ("suggest", "on_trial_result", "on_trial_complete"),
    ),
}


def merge(tree: dict, overrides: dict) -> dict:
    out = dict(tree)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def space_tree(code: Path, overrides: dict, name: str) -> dict:
    tree = yaml.safe_load((code / "search_spaces" / "quickstart.yaml").read_text())
    return {**merge(tree, overrides), "name": name}


# --- one sweep, in a child process ---------------------------------------------------------


def time_calls(bucket: dict[str, float]) -> None:
    """Wrap the driver's MLflow and Optuna calls with timers (class attributes, this process)."""
    import importlib

    for key, (module, cls_name, methods) in DRIVER_CALLS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        bucket[key] = 0.0
        for method in methods:
            original = getattr(cls, method, None)
            if original is None:
                continue

            def timed(self, *args, _original=original, _key=key, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(self, *args, **kwargs)
                finally:
                    bucket[_key] += time.perf_counter() - start

            setattr(cls, method, timed)


def stamp(owner: Any, name: str, driver: dict[str, float], key: str) -> None:
    """Record when `owner.name` is called (`key`_at, wall clock) and how long it takes (`key`_s)."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        driver[f"{key}_at"] = time.time()
        begin = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            driver[f"{key}_s"] = time.perf_counter() - begin

    setattr(owner, name, timed)


def read_trials(sweep_dir: Path) -> list[list[dict]]:
    """Every trial's reported results (Ray's result.json), in the order reported."""
    trials = []
    for path in sorted(sweep_dir.glob("*/result.json")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            trials.append(lines)
    return trials


def disk_usage(folder: Path) -> dict[str, float]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    checkpoints = [p for p in files if any(part.startswith("checkpoint_") for part in p.parts)]
    return {
        "results_mb": sum(p.stat().st_size for p in files) / 1e6,
        "checkpoints_left_mb": sum(p.stat().st_size for p in checkpoints) / 1e6,
        "checkpoint_dirs_left": len({p.parent for p in checkpoints}),
    }


def warm_cache(data_root: Path, domain: str, image_size: int, cache_dir: Path) -> None:
    """Decode one PACS domain into the cache, as the code at hand (perhaps a baseline's) reads it."""
    try:  # PACS listed like every dataset
        from asha_tune.trial.datasets import list_dataset
        from asha_tune.trial.loading import load_domain
    except ImportError:  # older: its own PACS path, in the layer layout or before it
        try:
            from asha_tune.trial.data import load_domain as load_pacs
        except ImportError:
            from asha_tune.data import load_domain as load_pacs
        load_pacs(data_root, domain, image_size, cache_dir)
        return
    load_domain(list_dataset("pacs", data_root, [domain]), domain, image_size, cache_dir)


def run_child(spec: dict) -> dict:
    """One sweep with the code at spec['code'] (first on sys.path and PYTHONPATH)."""
    code, work = Path(spec["code"]), Path(spec["workdir"])
    sys.path.insert(0, str(code))
    from asha_tune.spaces import load_space
    from asha_tune.sweep import SweepSettings

    try:  # the layer layout; a baseline commit may predate it
        from asha_tune.sweep import session as ray_start
        from asha_tune.trial.config import Runtime, TrialConfig

        start_name = "_start"
        try:
            from asha_tune import api as sweep_run
        except ImportError:  # a baseline before the facade (api.py, 312a645): the module it replaced
            from asha_tune.sweep import lifecycle as sweep_run  # type: ignore[no-redef]
    except ImportError:
        from asha_tune.config import Runtime, TrialConfig  # type: ignore[no-redef]

        from asha_tune.sweep import run as sweep_run  # type: ignore[no-redef]

        ray_start, start_name = sweep_run, "start_ray"

    space_path = work / "space.yaml"
    space_path.write_text(yaml.safe_dump(spec["tree"]))
    space = load_space(space_path)
    runtime = Runtime(data_root=spec["data_root"], cache_dir=spec["cache_dir"], device="cpu")
    d = TrialConfig.model_validate({"data": spec["tree"]["data"]}).data
    sources = getattr(d, "sources", (d.source,))  # older versions: one source, targets named
    targets = getattr(d, "target_domains", None) or d.targets
    for domain in (*sources, *targets):  # a warm cache: decoding is not what is measured
        warm_cache(Path(spec["data_root"]), domain, d.image_size, Path(spec["cache_dir"]))
    settings = SweepSettings(
        name="bench",
        space=space,
        results_dir=work / "results",
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        study_url=f"sqlite:///{work / 'optuna.db'}",
        runtime=runtime,
        num_cpus=spec["slots"],
    )
    driver: dict[str, float] = {}
    time_calls(driver)
    stamp(ray_start, start_name, driver, "ray_start")  # before it: the MLflow and Optuna stores
    import ray
    from ray import tune

    stamp(tune.Tuner, "fit", driver, "fit")
    stamp(ray, "shutdown", driver, "ray_shutdown")
    probe = Probe(os.environ[TAG_ENV], memory=spec.get("memory", False)).start()
    cpu0 = time.process_time()
    t0 = driver["t0"] = time.time()
    with contextlib.redirect_stdout(sys.stderr):
        outcome = sweep_run.launch(settings)
    t1 = time.time()
    driver["driver_cpu"] = time.process_time() - cpu0
    probe.stop()
    return {
        "finished": outcome.finished,
        "statuses": sorted(t.status for t in outcome.trials),
        "t0": t0,
        "t1": t1,
        "slots": spec["slots"],
        "trials": read_trials(settings.sweep_dir),
        "driver": driver,
        "machine": probe.summary(),
        "disk": disk_usage(settings.sweep_dir),
    }


# --- analysis (pure: tested on hand-made records) --------------------------------------------

# Slot time that is not training or evaluation adds up to exactly these parts.
# "idle slot": a slot with no trial process while others still run (the tail of the sweep, gaps
# between processes); "sweep end": every slot, from the last trial's last report to the end.
PARTS = (
    "sweep start",
    "process start",
    "imports",
    "model build",
    "data load",
    "checkpoint write",
    "report round trips",
    "between trials",
    "idle slot",
    "sweep end",
)


def _segments(trial: list[dict]) -> list[list[dict]]:
    """A trial's results split by process run (a retry or a resume starts a new segment)."""
    segments: list[list[dict]] = []
    for result in trial:
        if "at_entry" in result or not segments:
            segments.append([])
        segments[-1].append(result)
    return segments


def _start(result: dict) -> float:
    """Wall time at which the epoch behind `result` began computing."""
    return result["at_report"] - result["time_train"] - result["time_eval"]


def _end(segment: list[dict]) -> float:
    return segment[-1]["at_report"] + segment[-1].get("time_checkpoint", 0.0)


def _assign_slots(spans: list[tuple[float, float]], slots: int) -> list[list[int]]:
    """Greedy: each process goes to the slot that fell free first (spans sorted by start)."""
    lanes: list[list[int]] = [[] for _ in range(slots)]
    free = [float("-inf")] * slots
    for i in sorted(range(len(spans)), key=lambda i: spans[i][0]):
        lane = min(range(slots), key=lambda k: free[k])
        lanes[lane].append(i)
        free[lane] = spans[i][1]
    return lanes


def analyse(run: dict) -> dict:
    """Efficiency and the per-trial overhead, from a run's records (see run_child)."""
    slots = run["slots"]
    # Epoch results only (a failed trial's last report has no timings).
    trials = [t for t in ([r for r in trial if "time_train" in r] for trial in run["trials"]) if t]
    wall = run["t1"] - run["t0"]
    results = [r for t in trials for r in t]
    compute = sum(r["time_train"] + r["time_eval"] for r in results)
    n = len(trials)
    out: dict[str, Any] = {
        "trials": n,
        "epochs": len(results),
        "slots": slots,
        "wall_s": wall,
        "compute_s": compute,
        "compute_per_trial_s": compute / n if n else 0.0,
        "efficiency": compute / (wall * slots),
        "overhead_per_trial_s": (wall * slots - compute) / n if n else 0.0,
        "checkpoint_writes": sum(1 for r in results if r.get("checkpoint_dir_name")),
        "data_load_s": sum(r.get("time_data", 0.0) for r in results),
        # CPU seconds of every process of the sweep (driver, Ray, trials): robust to other load.
        "cpu_per_epoch_s": run["machine"].get("our_cpu_s", 0.0) / len(results) if results else 0.0,
        "cpu_per_trial_s": run["machine"].get("our_cpu_s", 0.0) / n if n else 0.0,
        "driver": run["driver"],
        "machine": run["machine"],
        "disk": run["disk"],
    }
    if n and all("at_report" in r for r in results):
        parts = _parts(trials, run["t0"], run["t1"], slots)
        out["parts_s"] = parts
        out["parts_per_trial_s"] = {k: v / n for k, v in parts.items()}
        fixed = parts["sweep start"] + parts["sweep end"]
        out["overhead_per_trial_in_sweep_s"] = (wall * slots - compute - fixed) / n
        out["first_step_per_trial_s"] = _first_step(trials) / n
    return out


def _parts(trials: list[list[dict]], t0: float, t1: float, slots: int) -> dict[str, float]:
    """Slot time that is not training or evaluation, by cause (seconds, summed over slots)."""
    parts = dict.fromkeys(PARTS, 0.0)
    processes: dict[int, list[list[dict]]] = {}
    for trial in trials:
        for segment in _segments(trial):
            processes.setdefault(segment[0]["pid"], []).append(segment)
    spans = []
    for segments in processes.values():
        segments.sort(key=lambda s: s[0]["at_entry"])
        first = segments[0][0]
        born = first.get("at_process", first["at_entry"])
        spans.append((born, _end(segments[-1])))
        for i, segment in enumerate(segments):
            head = segment[0]
            if i == 0:
                parts["process start"] += head["at_entry"] - born
            else:
                parts["between trials"] += head["at_entry"] - _end(segments[i - 1])
            parts["imports"] += head.get("time_imports", 0.0)
            setup = _start(head) - head["at_entry"] - head.get("time_imports", 0.0)
            parts["data load"] += head.get("time_data", 0.0)
            parts["model build"] += setup - head.get("time_data", 0.0)
            for prev, result in zip(segment, segment[1:], strict=False):
                parts["report round trips"] += _start(result) - _end([prev])
            parts["checkpoint write"] += sum(r.get("time_checkpoint", 0.0) for r in segment)
    lanes = _assign_slots(spans, slots)
    last = max((end for _, end in spans), default=t0)
    parts["sweep end"] = (t1 - last) * slots
    for lane in lanes:
        if not lane:
            parts["idle slot"] += last - t0
            continue
        parts["sweep start"] += spans[lane[0]][0] - t0
        parts["idle slot"] += last - spans[lane[-1]][1]
        for a, b in zip(lane, lane[1:], strict=False):  # a slot between two processes
            parts["idle slot"] += spans[b][0] - spans[a][1]
    return parts


def _first_step(trials: list[list[dict]]) -> float:
    """Warm-up inside the first epoch of each process run (part of compute, so not in PARTS):
    its training time over the median of the later epochs, for runs of two epochs or more
    (signed: noise averages out instead of adding up)."""
    extra = 0.0
    for trial in trials:
        for segment in _segments(trial):
            later = [r["time_train"] for r in segment[1:]]
            if later:
                extra += segment[0]["time_train"] - statistics.median(later)
    return extra


# --- the parent: runs, interleaved, and the table --------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def extract(rev: str, into: Path) -> Path:
    """The tree of commit `rev`, as files (no worktree is registered)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def child(spec: dict, scratch: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix="sweep-", dir=scratch))
    spec = {**spec, "workdir": str(work)}
    spec_file = work / "spec.json"
    out_file = work / "out.json"
    spec_file.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "PYTHONPATH": spec["code"],
        TAG_ENV: uuid.uuid4().hex,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PYTHONUNBUFFERED": "1",
    }
    with open(work / "sweep.log", "w") as log:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(spec_file), str(out_file)],
            env=env,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if done.returncode or not out_file.exists():
        tail = (work / "sweep.log").read_text()[-3000:]
        raise RuntimeError(f"benchmark sweep failed (rc {done.returncode}); log {work}/sweep.log:\n{tail}")
    return json.loads(out_file.read_text())


def memory_figures(run: dict) -> dict:
    m = run["machine"].get("memory_peak", {})
    return {"trials_at_once": run["slots"], **m}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=os.environ.get("ASHA_TUNE_DATA_ROOT"))
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "asha-tune-bench-cache")
    p.add_argument(
        "--baseline",
        help="also run the code of these commits (comma-separated, e.g. main), interleaved with this tree's",
    )
    p.add_argument("--profiles", default="long,quickstart", help=f"comma-separated of {', '.join(PROFILES)}")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--trials", type=int, help="trials per sweep (default: the profile's)")
    p.add_argument("--memory", default="1,4", help="trials at once for the memory runs ('' for none)")
    p.add_argument(
        "--memory-size",
        type=int,
        default=128,
        help="image size of the memory runs (whole domains: 128 px is 250 MB a trial)",
    )
    p.add_argument("--out", type=Path, default=Path("sweep-benchmark.json"))
    p.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        spec_file, out_file = args.child
        out_file.write_text(json.dumps(run_child(json.loads(spec_file.read_text()))))
        return
    if args.data_root is None:
        p.error("--data-root (or ASHA_TUNE_DATA_ROOT) is needed")
    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731  (progress; the table goes to stdout)
    scratch = Path(tempfile.mkdtemp(prefix="asha-sweep-bench-"))
    variants = {
        f"HEAD {git('rev-parse', '--short', 'HEAD')}"
        + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else ""): REPO
    }
    for given in reversed([v for v in (args.baseline or "").split(",") if v]):
        rev = git("rev-parse", "--short", given)
        variants = {
            f"{rev} {given}" if given != rev else rev: extract(rev, scratch / f"code-{rev}"),
            **variants,
        }
    common = {"data_root": str(args.data_root.resolve()), "cache_dir": str(args.cache_dir.resolve())}
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "variants": list(variants),
        "profiles": {},
        "memory": {},
    }
    for round_ in range(args.rounds):
        for profile in args.profiles.split(","):
            overrides = PROFILES[profile]
            if args.trials:
                overrides = merge(overrides, {"search": {"num_trials": args.trials}})
            for label, code in variants.items():
                say(f"round {round_ + 1}: {profile} sweep, {label}")
                tree = space_tree(code, overrides, f"bench-{profile}")
                run = child(
                    {**common, "code": str(code), "tree": tree, "slots": tree["search"]["max_concurrent"]},
                    scratch,
                )
                entry = report["profiles"].setdefault(profile, {"space": tree, "runs": {}})
                entry["runs"].setdefault(label, []).append(analyse(run))
    for k in [int(v) for v in args.memory.split(",") if v]:
        for label, code in variants.items():
            say(f"memory: {k} trial(s) at once, {label}")
            tree = space_tree(
                code,
                merge(
                    MEMORY_PROFILE,
                    {
                        "search": {"num_trials": k, "max_concurrent": k},
                        "data": {"image_size": args.memory_size},
                    },
                ),
                f"bench-memory-{k}",
            )
            run = child({**common, "code": str(code), "tree": tree, "slots": k, "memory": True}, scratch)
            report["memory"].setdefault(label, []).append(
                {**memory_figures(run), "machine": run["machine"], "image_size": args.memory_size}
            )
    args.out.write_text(json.dumps(report, indent=2))
    print(table(report))


def table(r: dict) -> str:
    lines = [f"asha-tune sweep benchmark · CPU {r['cpu']} ({r['cores']} cores) · {r['date']}", ""]
    for profile, entry in r["profiles"].items():
        s = entry["space"]
        d, t = s["data"], s["train"]
        lines.append(
            f"{profile}: {s['search']['num_trials']} trials x {t['epochs']} epochs, "
            f"{d['image_size']} px, {d.get('limit_per_domain') or 'all'} images per domain, "
            f"{s['scheduler']['kind']}, {s['search']['max_concurrent']} slots"
        )
        lines.append(
            f"  {'variant':22s} {'wall s':>6s} {'compute s':>9s} {'effic.':>6s} {'ovh/trial':>9s} "
            f"{'in sweep':>8s} {'CPU/epoch':>9s} {'epochs':>6s} {'ckpts':>5s} {'left MB':>7s} "
            f"{'load':>5s} {'others':>6s}"
        )
        for label, runs in entry["runs"].items():
            for run in runs:
                m = run["machine"]
                in_sweep = run.get("overhead_per_trial_in_sweep_s")
                in_sweep = "-" if in_sweep is None else f"{in_sweep:.2f}"
                lines.append(
                    f"  {label:22s} {run['wall_s']:6.1f} {run['compute_s']:9.1f} {run['efficiency']:6.0%} "
                    f"{run['overhead_per_trial_s']:9.2f} {in_sweep:>8s} "
                    f"{run['cpu_per_epoch_s']:9.2f} {run['epochs']:6d} {run['checkpoint_writes']:5d} "
                    f"{run['disk']['checkpoints_left_mb']:7.0f} {m['load_1min_mean']:5.1f} "
                    f"{m['others_busy_cores']:6.2f}"
                )
        for label, runs in entry["runs"].items():
            run = runs[-1]
            if "parts_per_trial_s" in run:
                parts = " · ".join(f"{k} {v:.2f}" for k, v in run["parts_per_trial_s"].items())
                lines.append(
                    f"  overhead per trial, {label} (s): {parts}; first-step warm-up "
                    f"(inside compute) {run['first_step_per_trial_s']:.2f}"
                )
            d = run["driver"]
            n = run["trials"]
            nan = float("nan")
            lines.append(
                f"  driver per trial, {label} (s): MLflow {d['tracking'] / n:.2f} · "
                f"Optuna {d['study'] / n:.2f} · driver CPU {d['driver_cpu'] / n:.2f}; once: "
                f"stores {d.get('ray_start_at', nan) - d.get('t0', nan):.1f} s, Ray start "
                f"{d.get('ray_start_s', nan):.1f} s, "
                f"Ray shutdown {d.get('ray_shutdown_s', nan):.1f} s"
            )
        lines.append("")
    for label, runs in r["memory"].items():
        for m in runs:
            if "Pss_mib" not in m:
                continue
            k = m["trials_at_once"]
            size = m.get("image_size", "?")
            lines.append(
                f"memory, {k} trial(s) at once, {size} px, {label}: PSS {m['Pss_mib']:.0f} MiB "
                f"({m['Pss_mib'] / k:.0f} per trial: anon {m['Pss_Anon_mib'] / k:.0f}, file "
                f"{m['Pss_File_mib'] / k:.0f}), RSS {m['Rss_mib']:.0f} MiB "
                f"· load {m['machine']['load_1min_mean']:.1f}"
            )
    lines += [
        "",
        "effic.: trial compute (train + eval, the trials' own timings) / (wall x slots); ovh/trial: the",
        "rest per trial; in sweep: without the sweep's start and end; CPU/epoch: CPU seconds of every",
        "process of the sweep per epoch trained; ckpts: checkpoint writes; left MB: checkpoints on disk",
        "at the end; load: 1-min load average (mean); others: cores busy with other processes (mean)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
