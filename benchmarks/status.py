"""How long `asha-tune status NAME` and `asha-tune list` take on a store of 1,000 trials, as whole
commands (a fresh interpreter each: imports, opening the store, reading, printing).

    python benchmarks/status.py [--trials 1000] [--epochs 5] [--runs 5] [--store PATH] [--code DIR]

It writes (once; --store keeps it for the next run) a sqlite store holding one finished sweep of
`--trials` trial runs with per-epoch metrics and the tags the driver writes, through MLflow's
client in batches (one create_run, one log_batch and one set_terminated per trial), then times
each command `--runs` times and prints the median, min and max wall time, with the CPU and the
machine's load (the machine may be shared). `--code DIR` times another checkout's asha_tune (put
first on PYTHONPATH), e.g. the commit before tracking/reader.py. Figures, no assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.probe import cpu_model

NAME = "thousand"
COMMAND = "import sys; from asha_tune.cli import main; sys.exit(main(sys.argv[1:]))"


def cpu_name() -> str:
    return f"CPU {cpu_model()} ({os.cpu_count()} cores)"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build(db: Path, trials: int, epochs: int) -> float:
    """A finished sweep of `trials` trials in a new sqlite store at `db`; seconds it took."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from asha_tune.spaces import load_space
    from asha_tune.tracking import Tracker

    started = time.monotonic()
    uri = f"sqlite:///{db}"
    tracker = Tracker(uri)  # asha-tune's own store: its experiment's artifacts beside it
    experiment = tracker.experiment("benchmark")
    space = load_space("random_layers").model_dump(mode="json")
    space["search"]["num_trials"] = trials
    parent = tracker.start_run(
        experiment,
        NAME,
        params={"search": {"num_trials": trials, "max_concurrent": 4}, "selection": {"protocol": "oracle"}},
        tags={"asha_tune.sweep": NAME},
    )
    tracker.log_dict(parent, space, "space.json")
    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    for number in range(trials):
        status = ("completed", "pruned", "failed")[number % 3]
        tags = {
            "mlflow.parentRunId": parent,
            "asha_tune.trial_number": str(number),
            "asha_tune.status": status,
            "asha_tune.started_at": f"{now / 1000 - 600 + number:.1f}",
            "asha_tune.duration_s": f"{30 + number % 7}",
            "asha_tune.epochs_run": str(epochs),
        }
        if status == "failed":
            tags["asha_tune.failure"] = "RuntimeError: CUDA out of memory"
        run = client.create_run(experiment, run_name=f"trial-{number:04d}", tags=tags).info.run_id
        metrics = [
            Metric(key, value, now + epoch, epoch)
            for epoch in range(1, epochs + 1)
            for key, value in (
                ("val_acc", 40.0 + (number * 7 % 30) + epoch),
                ("val_acc_se", 2.0),
                ("train_loss", 1.0 / epoch),
                ("time_train", 5.0),
                ("time_eval", 1.0),
            )
        ]
        client.log_batch(run, metrics=metrics)
        client.set_terminated(run, "FAILED" if status == "failed" else "FINISHED")
    tracker.finish(parent, "completed")
    return time.monotonic() - started


def timed(argv: list[str], code: Path | None, runs: int, cwd: Path) -> tuple[list[float], str]:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    walls, out = [], ""
    for _ in range(runs):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", COMMAND, *argv], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        walls.append(time.monotonic() - started)
        if done.returncode != 0:
            raise SystemExit(f"asha-tune {' '.join(argv)} failed: {done.stdout}{done.stderr}")
        out = done.stdout
    return walls, out


def which_code(code: Path | None, cwd: Path) -> str:
    env = dict(os.environ, **({"PYTHONPATH": str(code)} if code else {}))
    probe = "import asha_tune, os; print(os.path.dirname(os.path.dirname(asha_tune.__file__)))"
    where = subprocess.run([sys.executable, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where.stdout.strip() or REPO,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    return f"{where.stdout.strip()} at {commit}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--store", type=Path, help="the sqlite file (kept; built if missing)")
    parser.add_argument("--code", type=Path, help="time this checkout's asha_tune instead")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    db = (args.store or Path.cwd() / "status-benchmark" / "mlflow.db").resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        took = build(db, args.trials, args.epochs)
        print(f"built {db}: {args.trials} trials x {args.epochs} epochs in {took:.0f} s")
    uri = f"sqlite:///{db}"
    print(f"asha-tune status benchmark · {cpu_name()} · code {which_code(args.code, db.parent)}")
    figures = {}
    for label, argv in (
        ("status", ["status", NAME, "--tracking-uri", uri]),
        ("list", ["list", "--tracking-uri", uri]),
    ):
        before = load_average()
        walls, out = timed(argv, args.code, args.runs, db.parent)
        figures[label] = {
            "median_s": statistics.median(walls),
            "walls_s": walls,
            "load": [before, load_average()],
        }
        print(
            f"asha-tune {label:<7} median {statistics.median(walls):.2f} s (min {min(walls):.2f}, "
            f"max {max(walls):.2f}, {len(walls)} runs) · load average {before} -> {load_average()}"
        )
        if label == "status":
            print("  " + out.strip().splitlines()[2])  # its trials line: it did read them all
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "figures": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
