"""Scale benchmark: the sweep driver's own cost, three drivers on one simulated workload.

    python benchmarks/scale.py [--trials 200] [--at-once 8,32] [--epoch-s 0.25] [--arms A,B,C]
                               [--sampler random|tpe] [--out FILE.json]
    python benchmarks/scale.py --kill-halfway --trials 10000 --at-once 64 [--address HOST:PORT]

Every trial is asha-tune's rehearsal trial (sweep/rehearsal.py): each epoch sleeps --epoch-s and
reports a score made up from the configuration, checkpoints where a real trial would, no torch.
So only scheduling and records cost anything, and the three drivers run the same trials:

  A  Ray Tune alone: ASHA, random search, Tune's default callbacks
  B  Ray Tune with its OptunaSearch (the --sampler, in memory)
  C  asha-tune: `launch --rehearse` (its searcher on an Optuna study in SQLite, ResumableASHA,
     its callbacks, MLflow in SQLite)

Each arm runs in a process of its own with a local Ray of --at-once CPUs (one per trial), one
arm after another, so they see the same machine. Driver CPU is that process's (all its threads:
work moved to a background thread still counts), from before Ray starts to after the records
are closed. C's records process (a sweep of 50 trials or more writes MLflow and Optuna from a
process of its own, sweep/records_process.py) has a column of its own, and the ratios give C's
CPU with it too. The trials time each `tune.report` call themselves (how long the driver held them).
Prints the table with the machine, its load and the commit; --out also writes the figures as JSON.

--kill-halfway runs arm C through the CLI instead, SIGKILLs the driver once half the trials have
ended, resumes it, and checks that every trial is recorded once in MLflow and Optuna with no
metric logged twice (on a cluster with --address, e.g. one `asha-tune cluster up` started).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.probe import TAG_ENV, load_average, tagged

ARMS = {
    "A": "Ray Tune alone (ASHA, random search)",
    "B": "Ray Tune + its OptunaSearch",
    "C": "asha-tune (searcher, ASHA, callbacks, MLflow + Optuna on SQLite)",
}
CONVS = [json.dumps(list(c)) for k in (1, 2) for c in combinations(range(1, 8), k)]  # quickstart's
METRIC, MODE = "val_acc", "max"


def space_tree(trials: int, at_once: int, sampler: str, epochs: int) -> dict[str, Any]:
    """quickstart's space (ASHA: grace 1, reduction 2), sized for the run."""
    import yaml

    tree = yaml.safe_load((REPO / "search_spaces" / "quickstart.yaml").read_text())
    tree["name"] = "scale"
    tree["train"]["epochs"] = epochs
    tree["search"].update(
        algorithm="random" if sampler == "random" else "optuna", num_trials=trials, max_concurrent=at_once
    )
    return tree


# --- one arm, in its own process ------------------------------------------------------------------


def bench_trial(config: dict[str, Any], space: Any, epoch_s: float) -> None:
    """Arms A and B: Tune's flat config turned into the rehearsal trial's."""
    from asha_tune.sweep.rehearsal import rehearse_trial

    values = {"shaping.p0": config["p0"], "shaping.convs": json.loads(config["convs"])}
    rehearse_trial({"trial_number": -1, "values": values}, space, epoch_s)


def run_tune(arm: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from asha_tune.spaces import SearchSpace

    space = SearchSpace.model_validate(space_tree(args.trials, args.at_once, args.sampler, args.epochs))
    search_alg = None
    if arm == "B":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.RandomSampler(seed=0) if args.sampler == "random" else None
        search_alg = OptunaSearch(metric=METRIC, mode=MODE, sampler=sampler, seed=0)
    # A new local instance ("local"), never a cluster another `ray start` left on this machine.
    ray.init(
        address="local",
        num_cpus=args.at_once,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    try:
        tuner = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(bench_trial, space=space, epoch_s=args.epoch_s), {"cpu": 1}
            ),
            param_space={"p0": tune.uniform(0.0, 0.9), "convs": tune.choice(CONVS)},
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                scheduler=ASHAScheduler(
                    time_attr="epoch",
                    metric=METRIC,
                    mode=MODE,
                    max_t=args.epochs,
                    grace_period=1,
                    reduction_factor=2,
                ),
                num_samples=args.trials,
                max_concurrent_trials=args.at_once,
                reuse_actors=True,  # as asha-tune's: a slot's process runs its next trial
            ),
            run_config=tune.RunConfig(name=f"arm-{arm}", storage_path=str(work / "results"), verbose=0),
        )
        grid = tuner.fit()
        ended = sum(1 for r in grid if r.metrics)
    finally:
        ray.shutdown()
    return {"ended": ended}


def run_asha_tune(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from asha_tune.api import launch
    from asha_tune.spaces import SearchSpace
    from asha_tune.sweep.settings import Rehearsal, SweepSettings
    from asha_tune.trial.config import Runtime

    space = SearchSpace.model_validate(space_tree(args.trials, args.at_once, args.sampler, args.epochs))
    settings = SweepSettings(
        name="scale",
        space=space,
        results_dir=work / "results",
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        study_url=f"sqlite:///{work / 'optuna.db'}",
        runtime=Runtime(device="cpu"),
        num_cpus=args.at_once,
        address=args.address,
        rehearse=Rehearsal(epoch_s=args.epoch_s),
    )
    outcome = launch(settings)
    return {"ended": len(outcome.trials), "finished": outcome.finished}


def profiled_threads(folder: Path) -> Any:
    """cProfile on each thread's own CPU time (`time.thread_time`): the main thread's profile and
    every other Python thread's (the record writer, Tune's helpers), written to `folder` as
    <thread name>.prof when it ends. Returns the main thread's profiler (stopped by the caller)."""
    import cProfile
    import threading

    folder.mkdir(parents=True, exist_ok=True)
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()
            name = "".join(c if c.isalnum() else "-" for c in self.name)[:60]
            profile.dump_stats(folder / f"thread-{name}-{threading.get_ident()}.prof")

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile(time.thread_time)
    main.enable()
    return main


def run_arm(arm: str, args: argparse.Namespace) -> None:
    """The child process: run one arm, write its driver's figures to --result."""
    work = Path(args.work)
    main_profile = profiled_threads(work / "profile") if args.profile else None
    os.environ["ASHA_TUNE_REHEARSAL_TIMINGS"] = str(work / "timings")
    (work / "timings").mkdir(parents=True, exist_ok=True)
    if arm == "C":
        # The Python API as `asha-tune launch` sets it up (the CLI's quiet Ray environment).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    else:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    before = resource.getrusage(resource.RUSAGE_SELF)
    begin = time.time()
    out = run_asha_tune(args, work) if arm == "C" else run_tune(arm, args, work)
    wall = time.time() - begin
    if arm == "C":  # a sweep this size writes its records from a process of its own: its CPU too
        from asha_tune.sweep.writer import PROCESS_CPU_S

        out["records_cpu_s"] = sum(PROCESS_CPU_S.values())
    after = resource.getrusage(resource.RUSAGE_SELF)
    if main_profile is not None:
        main_profile.disable()
        main_profile.dump_stats(work / "profile" / "main.prof")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out.update(begin=begin, wall_s=wall, cpu_s=cpu, peak_rss_mib=after.ru_maxrss / 1024)
    Path(args.result).write_text(json.dumps(out))


# --- the figures ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def read_timings(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Each trial process's trials, in order: when each started, when it sent each result, and
    how long each `tune.report` that returned had waited."""
    slots: dict[str, list[dict[str, Any]]] = {}
    for path in folder.glob("*.jsonl"):
        trials: list[dict[str, Any]] = []
        for line in path.read_text().splitlines():
            event = json.loads(line) if line.strip() else {}
            if "start" in event:
                trials.append({"start": event["start"], "sent": [], "waits": []})
            elif trials and "sent" in event:
                trials[-1]["sent"].append(event["sent"])
            elif trials and "wait" in event:
                trials[-1]["waits"].append(event["wait"])
        slots[path.stem] = trials
    return slots


def slot_figures(slots: dict[str, list[dict[str, Any]]], at_once: int) -> dict[str, float]:
    """Waits in `report`; the gap in a slot from a trial's last result to the next trial's start;
    how long after the first trial started every slot had started one."""
    trials = [t for ts in slots.values() for t in ts]
    waits = [w for t in trials for w in t["waits"]]
    gaps = [
        b["start"] - a["sent"][-1]
        for ts in slots.values()
        for a, b in zip(ts, ts[1:], strict=False)
        if a["sent"]
    ]
    firsts = sorted(ts[0]["start"] for ts in slots.values() if ts)
    fill = firsts[at_once - 1] - firsts[0] if len(firsts) >= at_once else float("nan")
    return {
        "results": sum(len(t["sent"]) for t in trials),
        "wait_median_ms": 1000 * statistics.median(waits) if waits else float("nan"),
        "wait_p95_ms": 1000 * percentile(waits, 0.95),
        "gap_median_ms": 1000 * statistics.median(gaps) if gaps else float("nan"),
        "fill_s": fill,
    }


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def check_records(work: Path, trials: int, name: str = "scale") -> str:
    """Arm C's records: every trial once in MLflow and in Optuna, no metric logged twice."""
    import optuna
    from mlflow.tracking import MlflowClient

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'optuna.db'}")
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    problems = []
    if len(states) != trials or not set(states) <= {"COMPLETE", "PRUNED", "FAIL"}:
        problems.append(f"Optuna: {len(states)} trials, states {sorted(set(states))}")
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("scale")
    parent = client.search_runs([experiment.experiment_id], f"tags.`asha_tune.sweep` = '{name}'")[0]
    children: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
            max_results=1000,
            page_token=token,
        )
        children += page
        token = page.token
        if not token:
            break
    numbers = sorted(int(r.data.tags["asha_tune.trial_number"]) for r in children)
    if numbers != list(range(trials)):
        distinct = len(set(numbers))
        problems.append(f"MLflow: {len(numbers)} child runs for {trials} trials ({distinct} numbers)")
    twice = 0
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, METRIC)]
        epochs = int(run.data.tags.get("asha_tune.epochs_run", -1))
        twice += len(steps) != len(set(steps)) or sorted(steps) != list(range(1, epochs + 1))
        if run.data.tags.get("asha_tune.rehearsal") != "true":
            problems.append(f"run {run.info.run_id} is not marked as a rehearsal")
            break
    if twice:
        problems.append(f"{twice} runs whose {METRIC} steps are not each epoch once")
    # What resume, confirm and the sweep's close read (compare reads the same pages, Tracker.find_runs).
    from asha_tune.tracking import Tracker
    from asha_tune.tracking.records import sweep_trials

    read = sweep_trials(
        Tracker(f"sqlite:///{work / 'mlflow.db'}"), experiment.experiment_id, parent.info.run_id
    )
    if len(read) != trials:
        problems.append(f"the sweep's reader sees {len(read)} of {trials} trials")
    if problems:
        return "; ".join(problems)
    return f"every trial once in MLflow and Optuna ({trials}), no metric twice"


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown",
    )  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_1min": load_average(),
        "commit": commit.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else ""),
    }


def measure(arm: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    work = root / f"{arm}-{args.trials}-{args.at_once}"
    work.mkdir(parents=True)
    result = work / "driver.json"
    command = [sys.executable, __file__, "--run-arm", arm, "--work", str(work), "--result", str(result)]
    command += ["--trials", str(args.trials), "--at-once", str(args.at_once), "--epoch-s", str(args.epoch_s)]
    command += ["--epochs", str(args.epochs), "--sampler", args.sampler]
    command += ["--address", args.address] if args.address else []
    command += ["--profile"] if args.profile else []
    load_before = load_average()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode != 0 or not result.is_file():
        tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise SystemExit(f"arm {arm} failed ({done.returncode}):\n{tail}")
    driver = json.loads(result.read_text())
    slots = slot_figures(read_timings(work / "timings"), args.at_once)
    stores = {
        "results_mib": folder_bytes(work / "results") / 2**20,
        "mlflow_mib": folder_bytes(work / "mlflow.db") / 2**20,
        "optuna_mib": folder_bytes(work / "optuna.db") / 2**20,
    }
    row = {"arm": arm, "trials": args.trials, "at_once": args.at_once, **driver, **slots, **stores}
    row["load"] = (load_before + load_average()) / 2
    row["trials_per_s"] = args.trials / driver["wall_s"]
    row["cpu_per_trial_ms"] = 1000 * driver["cpu_s"] / args.trials
    row["cpu_per_result_ms"] = 1000 * driver["cpu_s"] / max(slots["results"], 1)
    row["records_cpu_per_trial_ms"] = 1000 * driver.get("records_cpu_s", 0.0) / args.trials
    if arm == "C":
        row["records"] = check_records(work, args.trials)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| driver | trials, at once | wall s | trials/s | driver CPU per trial | per result | records "
        "process CPU per trial | wait in report median | p95 | gap between trials (median) | all slots "
        "busy after | driver peak memory | stores (results, MLflow, Optuna) | load |"
    )
    lines = [head, "|" + "---|" * 2 + "---:|" * 12]
    for r in rows:
        stores = f"{r['results_mib']:.1f}, {r['mlflow_mib']:.1f}, {r['optuna_mib']:.1f} MiB"
        records = r.get("records_cpu_per_trial_ms", 0.0)
        lines.append(
            f"| {r['arm']}: {ARMS[r['arm']]} | {r['trials']:,}, {r['at_once']} | {r['wall_s']:.0f} | "
            f"{r['trials_per_s']:.2f} | {r['cpu_per_trial_ms']:.0f} ms | {r['cpu_per_result_ms']:.1f} ms | "
            f"{f'{records:.0f} ms' if records else '-'} | "
            f"{r['wait_median_ms']:.0f} ms | {r['wait_p95_ms']:.0f} ms | {r['gap_median_ms']:.0f} ms | "
            f"{r['fill_s']:.1f} s | {r['peak_rss_mib']:.0f} MiB | {stores} | {r['load']:.1f} |"
        )
    return "\n".join(lines)


def total_cpu_ms(row: dict[str, Any]) -> float:
    """CPU per trial of the driver and of its records process together."""
    return row["cpu_per_trial_ms"] + row.get("records_cpu_per_trial_ms", 0.0)


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's goals, per concurrency: C against B (wait, CPU) and against A (rate)."""
    out = []
    for at_once in sorted({r["at_once"] for r in rows}):
        by = {r["arm"]: r for r in rows if r["at_once"] == at_once}
        if not {"A", "B", "C"} <= set(by):
            continue
        a, b, c = by["A"], by["B"], by["C"]
        met = "met" if c["wait_median_ms"] <= b["wait_median_ms"] else "missed"
        out.append(
            f"at {at_once} at once: C's median wait {c['wait_median_ms']:.0f} ms vs B's "
            f"{b['wait_median_ms']:.0f} ms ({met}); "
            f"C's CPU per trial {c['cpu_per_trial_ms'] / b['cpu_per_trial_ms']:.2f}x B's (goal <= 1.5; "
            f"{total_cpu_ms(c) / b['cpu_per_trial_ms']:.2f}x with its records process); "
            f"C's trial rate {c['trials_per_s'] / a['trials_per_s']:.2f}x A's (goal >= 0.8)"
        )
    return out


# --- kill halfway, then resume ----------------------------------------------------------------------


def ended_trials(work: Path) -> int:
    import sqlite3

    db = work / "optuna.db"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            ended = "select count(*) from trials where state in ('COMPLETE', 'PRUNED', 'FAIL')"
            row = con.execute(ended).fetchone()
        return int(row[0])
    except sqlite3.Error:
        return 0


def started_trials(timings: Path) -> int:
    """Trials the slots have started, from the rehearsal trials' own timings (a line cut short by
    the kill included): Tune's view, which the records follow a moment later."""
    return sum(p.read_text().count('"start"') for p in timings.glob("*.jsonl"))


def kill_halfway(args: argparse.Namespace, root: Path) -> None:
    import yaml

    work = root / f"kill-{args.trials}-{args.at_once}"
    work.mkdir(parents=True)
    space = work / "scale.yaml"
    space.write_text(yaml.safe_dump(space_tree(args.trials, args.at_once, args.sampler, args.epochs)))
    cli = [sys.executable, "-m", "asha_tune.cli"]
    common = ["--results-dir", str(work / "results")]
    launch = cli + ["launch", "--space", str(space), "--name", "scale", "--rehearse", str(args.epoch_s)]
    launch += common + ["--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"]
    launch += ["--study-url", f"sqlite:///{work / 'optuna.db'}"]
    launch += ["--address", args.address] if args.address else ["--num-cpus", str(args.at_once)]
    begin = time.time()
    tag = f"scale-{os.getpid()}-{begin:.0f}"  # marks this run's processes (Ray's inherit it)
    timings = work / "timings"
    timings.mkdir()
    env = {**os.environ, TAG_ENV: tag, "ASHA_TUNE_REHEARSAL_TIMINGS": str(timings)}
    with open(work / "launch.log", "w") as log:
        driver = subprocess.Popen(
            launch, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # Half the trials ended as the records say, or as Tune's starts imply (all but the
        # --at-once running ones of those started): the records may lag behind on a loaded machine.
        half = args.trials // 2
        while driver.poll() is None and ended_trials(work) < half:
            if started_trials(timings) - int(args.at_once) >= half:
                break
            time.sleep(0.2)
        killed_at = ended_trials(work)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    if not args.address:  # the local Ray's processes outlive their driver: stop them, as a reboot would
        for pid in tagged(tag, {}):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    middle = time.time()
    resume = cli + ["resume", "scale"] + common
    resume += ["--address", args.address] if args.address else ["--num-cpus", str(args.at_once)]
    with open(work / "resume.log", "w") as log:
        code = subprocess.run(resume, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    end = time.time()
    print(f"machine: {json.dumps(machine())}")
    print(
        f"{args.trials:,} trials, {args.at_once} at once, epoch {args.epoch_s} s: driver SIGKILLed after "
        f"{killed_at:,} trials had ended in the records ({middle - begin:.0f} s), resume exit {code} "
        f"({end - middle:.0f} s)"
    )
    print(f"records: {check_records(work, args.trials)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--at-once", default="8", help="trials at once, comma-separated for several runs")
    p.add_argument("--epoch-s", type=float, default=0.25, help="seconds each simulated epoch sleeps")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--arms", default="A,B,C")
    p.add_argument("--sampler", choices=["random", "tpe"], default="random", help="B's and C's sampler")
    p.add_argument("--address", help="arm C (and --kill-halfway) on this Ray cluster")
    p.add_argument("--kill-halfway", action="store_true")
    p.add_argument("--out", type=Path, help="also write the figures as JSON")
    p.add_argument("--keep", type=Path, help="keep every arm's files in this folder")
    p.add_argument(
        "--profile",
        action="store_true",
        help="cProfile each driver thread (ARM-TRIALS-AT_ONCE/profile/*.prof; the folder is printed)",
    )
    p.add_argument("--run-arm", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_arm:
        args.at_once = int(args.at_once)
        run_arm(args.run_arm, args)
        return 0
    root = args.keep or Path(tempfile.mkdtemp(prefix="asha-tune-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.kill_halfway:
        args.at_once = int(args.at_once)
        kill_halfway(args, root)
        return 0
    rows = []
    for at_once in [int(v) for v in args.at_once.split(",")]:
        for arm in args.arms.split(","):
            run = argparse.Namespace(**{**vars(args), "at_once": at_once})
            rows.append(measure(arm, run, root))
            took = rows[-1]["wall_s"]
            print(f"arm {arm}, {args.trials} trials, {at_once} at once: {took:.0f} s", flush=True)
    info = machine()
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores, load {info['load_1min']:.1f}; "
        f"commit {info['commit']}; "
        f"{args.epochs} epochs of {args.epoch_s} s per trial, sampler {args.sampler}"
        + ("; PROFILED: cProfile on every driver thread inflates its CPU and times" if args.profile else "")
    )
    print(table(rows))
    for line in ratios(rows):
        print(line)
    for r in rows:
        if "records" in r:
            print(f"arm C, {r['trials']} trials at {r['at_once']}: records: {r['records']}")
    if args.profile:
        print(f"profiles (pstats files, one per thread): {root}/*/profile/")
    if args.out:
        args.out.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                        "rows": rows}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
