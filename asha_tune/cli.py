"""The `asha-tune` command: argument parsing only; the work happens in the modules it calls.

Every user error ends as one line on stderr and a non-zero exit (2 for bad values), never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from asha_tune import defaults, errors
from asha_tune.defaults import DATA_ROOT_ENV, SPACES_ENV
from asha_tune.dotted import nested
from asha_tune.errors import AshaTuneError, ConfigError, first_line
from asha_tune.files import unwritable
from asha_tune.sweep.settings import IF_EXISTS
from asha_tune.tracking.records import all_failed, all_failed_text
from asha_tune.trial.config import Runtime, SelectionConfig, format_validation_error, trial_config
from asha_tune.trial.datasets import DATASETS
from asha_tune.trial.registry import (
    MODES,
    PAPER_PROTOCOL,
    SELECTION_PROTOCOLS,
    SHAPE_FUNCTIONS,
    protocols_with_split,
)

# `asha-tune trial` flags and the TrialConfig field each one sets.
TRIAL_FLAGS = {
    "--mode": "shaping.mode",
    "--convs": "shaping.convs",
    "--p0": "shaping.p0",
    "--shape-fn": "shaping.shape_fn",
    "--topk-fraction": "shaping.topk_fraction",
    "--shape-at-eval": "shaping.shape_at_eval",
    "--target-updates-bn": "shaping.target_updates_bn",
    "--target-pairing": "shaping.target_pairing",
    "--dataset": "data.dataset",
    "--source": "data.source",
    "--target": "data.targets",
    "--source-sampling": "data.source_sampling",
    "--image-size": "data.image_size",
    "--limit-per-domain": "data.limit_per_domain",
    "--epochs": "train.epochs",
    "--batch-size": "train.batch_size",
    "--eval-batch-size": "train.eval_batch_size",
    "--lr": "train.lr",
    "--weights": "train.weights",
    "--seed": "train.seed",
    "--precision": "train.precision",
    "--selection": "selection.protocol",
    "--val-fraction": "selection.val_fraction",
    "--split-seed": "selection.split_seed",
    "--selection-epoch": "selection.epoch",
}
BOOLEAN_FLAGS = {"--shape-at-eval", "--target-updates-bn"}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")

    def format_help(self) -> str:
        """Names from the registries (registry.py: data, no torch)."""
        text = super().format_help()
        if "{modes}" in text or "{shape_fns}" in text or "{datasets}" in text:
            text = text.replace("{modes}", " | ".join(MODES))
            text = text.replace("{shape_fns}", " | ".join(SHAPE_FUNCTIONS))
            text = text.replace("{datasets}", " | ".join(DATASETS))
        return text


def fail(prog: str, err: AshaTuneError) -> int:
    for line in str(err).splitlines() or [first_line(err)]:
        print(f"{prog}: error: {line}", file=sys.stderr)
    return err.exit_code


def unexpected(prog: str, err: BaseException, folder: Path | None) -> int:
    """The last line of defence: an error no check foresaw (a bug, or a library's own failure) is
    one line saying what failed and where its full traceback was written (in the sweep's folder
    when the command has one, else a temporary file), exit 1, as pip and Ray's CLI do;
    $ASHA_TUNE_DEBUG=1 shows the traceback instead."""
    import time
    import traceback

    text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {prog}\n{''.join(traceback.format_exception(err))}\n"
    where = _write_error_log(folder, text)
    kept = f"the full traceback is in {where}" if where else "its traceback could not be written"
    print(
        f"{prog}: error: unexpected {type(err).__name__}: {first_line(err)} ({kept}; "
        f"{defaults.DEBUG_ENV}=1 shows it here)",
        file=sys.stderr,
    )
    return 1


ERROR_LOG = "asha-tune-error.log"  # in a sweep's folder: the tracebacks of its unexpected errors


def _write_error_log(folder: Path | None, text: str) -> Path | None:
    """Append to the sweep's error log, else write a temporary file; None if neither can be."""
    import tempfile

    if folder is not None:
        try:
            with (folder / ERROR_LOG).open("a") as f:
                f.write(text)
            return folder / ERROR_LOG
        except OSError:
            pass
    try:
        fd, name = tempfile.mkstemp(prefix="asha-tune-error-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return Path(name)
    except OSError:
        return None


def error_log_folder(args: argparse.Namespace) -> Path | None:
    """The folder of the sweep a command works on, where it exists: its error log goes there."""
    name = getattr(args, "name", None)
    if not name or not hasattr(args, "results_dir"):
        return None
    folder = results_folder(args) / name
    return folder if folder.is_dir() else None


def closed_stdout() -> int:
    """Whoever reads the output stopped (`asha-tune spaces | head`): exit quietly, as Python's
    docs advise for SIGPIPE: point stdout at devnull so that the flush at exit raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def add_runtime_flags(p: argparse.ArgumentParser, tracking: bool = True) -> None:
    p.add_argument(
        "--data-root", help=f"the dataset's folder <domain>/<class>/<file> (default ${DATA_ROOT_ENV})"
    )
    p.add_argument(
        "--cache-dir", help=f"decoded-image cache (default ${defaults.CACHE_DIR_ENV} or {defaults.CACHE_DIR})"
    )
    p.add_argument(
        "--data-budget",
        help="images a trial may keep on its device, e.g. 8GiB; beyond it batches stream from the "
        "disk cache (default: half the device's memory, split between the trials sharing it)",
    )
    if tracking:
        p.add_argument(
            "--tracking-uri", help=f"MLflow tracking URI (default sqlite:///./{defaults.TRACKING_DB})"
        )


DEVICE_HELP = "where trials compute: auto (CUDA if present, else CPU) | cpu | cuda (default auto)"


def runtime_from(args: argparse.Namespace, device: str = "auto", base: Runtime | None = None) -> Runtime:
    """The Runtime, with the data root checked now so a typo fails before anything is recorded.

    `base` (a resumed sweep's runtime) fills in what the flags leave out.
    """
    base = base or Runtime()
    budget = getattr(args, "data_budget", None)
    try:
        budget = base.data_budget if budget is None else Runtime(data_budget=budget).data_budget
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, {"data_budget": "--data-budget"})) from None
    runtime = Runtime(
        data_root=args.data_root or base.data_root, cache_dir=args.cache_dir or base.cache_dir, device=device
    )
    root = runtime.existing_data_root("--data-root" if args.data_root else f"${DATA_ROOT_ENV}")
    # Absolute paths, so Ray workers and a later `resume` need no environment of their own.
    # (absolute(), not resolve(): a symlinked data root can be pointed elsewhere before a resume).
    cache = runtime.resolved_cache_dir().absolute()
    return Runtime(data_root=root.absolute(), cache_dir=cache, device=device, data_budget=budget)


# --- asha-tune trial -------------------------------------------------------------------------


def selection_help() -> str:
    """`--selection`: each protocol and what selects under it, from its record (registry.py)."""
    default = SelectionConfig().protocol
    parts = []
    for name, info in SELECTION_PROTOCOLS.items():
        notes = [info.selected_on]
        if info.folds:
            notes.append("two source domains or more")
        if name == default:
            notes.append("the default" + (", as the paper" if name == PAPER_PROTOCOL else ""))
        parts.append(f"{name} ({'; '.join(notes)})")
    return ("what selects: " + " | ".join(parts)).replace("%", "%%")


def add_trial_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trial", help="run one trial without Ray, logged to MLflow")
    help_text = {
        "--mode": "{modes} (default baseline)",
        "--convs": "convs to shape by the paper's numbers, e.g. 1,7",
        "--p0": "zero probability: 0.7 | 0.7,0.5 (one per conv) | 0.7:0.1 (geometric schedule)",
        "--shape-fn": "{shape_fns} (default by mode)",
        "--dataset": "{datasets} (default pacs; folder: any <root>/<domain>/<class>/<image> tree)",
        "--source": "source domain(s), e.g. art_painting or art_painting,cartoon (default art_painting)",
        "--target": "target domain(s), e.g. cartoon or cartoon,sketch (default: every other domain)",
        "--source-sampling": "union (default: batches from all source images) | balanced (equal "
        "images of each source domain per batch)",
        "--limit-per-domain": "class-stratified subset size per domain (small runs)",
        "--weights": "imagenet | none | PATH to a state dict (default imagenet)",
        "--precision": "auto | fp32 | fp16 | bf16 (auto: fp16 on CUDA, fp32 on CPU)",
        "--batch-size": "training batch (default the paper's: 256 for modes target and bn_only, else 128)",
        "--target-pairing": "index (the authors': source i with target i %% len) | shuffled",
        "--selection": selection_help(),
        "--selection-epoch": "last (default, the paper's) | best (the epoch the selection metric picks, "
        "its weights kept)",
        "--val-fraction": f"held-out fraction per class for {', '.join(protocols_with_split())} "
        "(default 0.2)",
        "--split-seed": "seed of the validation split, independent of --seed (default 0)",
    }
    for flag in TRIAL_FLAGS:
        dest = flag[2:].replace("-", "_")
        if flag in BOOLEAN_FLAGS:
            p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(flag, dest=dest, metavar=dest.upper(), help=help_text.get(flag))
    add_runtime_flags(p)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help=DEVICE_HELP)
    p.add_argument("--experiment", default=None, help="MLflow experiment (default asha-tune-trials)")
    p.add_argument(
        "--checkpoint", type=Path, help="checkpoint file (default checkpoints/trial-<config hash>.pt)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if there is one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_trial)


def cmd_trial(args: argparse.Namespace) -> int:
    from asha_tune.analysis.verdicts import describe_trial
    from asha_tune.runner import DEFAULT_EXPERIMENT, run_logged_trial

    flat = {field: getattr(args, flag[2:].replace("-", "_")) for flag, field in TRIAL_FLAGS.items()}
    config = trial_config(
        nested({k: v for k, v in flat.items() if v is not None}),
        names={field: flag for flag, field in TRIAL_FLAGS.items()},
    )
    runtime = runtime_from(args, args.device)
    from asha_tune.sweep.preflight import check_trial_data, check_trial_weights

    # Before anything is recorded: one line per problem, exit 2; files skipped are said.
    for note in check_trial_data(config, runtime):
        print(note, file=sys.stderr)
    check_trial_weights(config)
    show_trial_lines()
    logged = run_logged_trial(
        config,
        runtime,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment or DEFAULT_EXPERIMENT,
        checkpoint=args.checkpoint,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(describe_trial(logged.result.final, len(logged.result.history), config.selection.protocol))
    print(f"MLflow run {logged.run_id}; checkpoint {logged.checkpoint}")
    return 0


def show_trial_lines() -> None:
    """The trial's own lines (its data path, decode progress) on stderr, as `asha-tune trial: ...`."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("asha-tune trial: %(message)s"))
    logger = logging.getLogger("asha_tune.trial")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


# --- sweeps ----------------------------------------------------------------------------------


def add_launch_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="start a sweep on Ray Tune (ASHA + Optuna, tracked in MLflow)",
        description="Start a sweep on Ray Tune (ASHA + Optuna, tracked in MLflow).",
        epilog=EXIT_STATUS,
    )
    add_space_flags(p)
    p.add_argument("--dry-run", action="store_true", help="validate and print the space; start nothing")
    p.add_argument(
        "--rehearse",
        type=float,
        nargs="?",
        const=0.5,
        metavar="EPOCH_S",
        help="a rehearsal: the same sweep on the same cluster, scheduler, searcher and stores, with "
        "simulated trials (each epoch sleeps EPOCH_S seconds, default 0.5, and reports a score made up "
        "from the configuration; no data, no torch), to check a cluster, its stores and a resume "
        "before spending GPU hours; its records are marked, and compare, confirm and warm starts "
        "refuse them",
    )
    p.add_argument("--name", help="sweep name (default <space>-<date>-<time>)")
    p.add_argument(
        "--restart",
        action="store_true",
        help="start the sweep --name over; its earlier records are kept as NAME.attempt-K",
    )
    p.add_argument(
        "--if-exists",
        choices=IF_EXISTS,
        default="fail",
        help="when the sweep --name already exists: fail (the default) | resume: continue it as "
        "asha-tune resume does, or report it if it has finished, so that a job entrypoint (a KubeRay "
        "RayJob, a SLURM script) resubmitted after its driver was lost goes on where it stopped; a "
        "sweep recorded as running is taken over only if its driver is gone; refused if this "
        "launch asks for another space or other records",
    )
    add_sweep_flags(p)
    add_runtime_flags(p)
    p.add_argument(
        "--study-url",
        help=f"database URL of the Optuna studies (default sqlite:///./{defaults.STUDY_DB})",
    )
    add_machine_flags(p)
    p.add_argument(
        "--detach",
        action="store_true",
        help="run the driver on the cluster (--address) as a Ray job, and return at once, so this "
        "machine may close: the job runs this launch with --if-exists resume, the space file sent "
        "with it; needs --name and the stores and --results-dir as the cluster sees them (absolute). "
        "asha-tune status NAME and logs NAME follow it; the same command again resubmits a driver "
        "that was lost, and is refused while one runs",
    )
    p.set_defaults(handler=cmd_launch, launch_parser=p)


def add_space_flags(p: argparse.ArgumentParser) -> None:
    """What `launch` searches: the space, its overrides and the shorthands for a few of them."""
    p.add_argument("--space", required=True, help="a space in search_spaces/ by name, or a YAML path")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a field of the space, e.g. --set train.epochs=3 (repeatable)",
    )
    p.add_argument(
        "--weights",
        metavar="WEIGHTS",
        help="initial weights of every trial: imagenet | none | PATH "
        "(the same as --set train.weights=WEIGHTS)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only the listed configurations whose id matches (e.g. 'da-*'; repeatable; "
        "the same as --set search.only=[...])",
    )
    p.add_argument(
        "--replicates",
        type=int,
        metavar="R",
        help="R independent runs of the whole search, each with its own sampler, trial and split seeds, "
        "as sweeps NAME.r0 .. NAME.r<R-1> under one parent run (the same as --set search.replicates=R)",
    )
    p.add_argument(
        "--warm-start",
        metavar="SWEEP",
        help="before searching, give the study the ended trials of SWEEP (e.g. a replayed paper_grid) "
        "that this space can express, with their results; the others are listed as skipped",
    )


def add_results_dir_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--results-dir", type=Path, help=f"{what} (default ./{defaults.RESULTS_DIR})")


EXIT_STATUS = (
    "exit status: 0 the sweep ran through; 1 every trial failed, or a sweep error; 2 bad input "
    "(nothing started); 3 lost the Ray cluster's head (records closed; resume once it is back); "
    "4 too little space under --results-dir (refused, or stopped: resume once space is freed); "
    "130 interrupted (resume continues it)"
)


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        help="join this Ray cluster, HOST:PORT, or auto: the one `ray start --head` started on this "
        "machine, as on the head of a `ray up` cluster (default $RAY_ADDRESS, which Ray sets for "
        "job drivers, else a local Ray); while the sweep runs its head is watched: if it stops "
        f"answering for {defaults.HEAD_LOST_S:.0f} s (${defaults.HEAD_LOST_ENV}), the records are "
        "closed and the sweep stops (exit 3) with the command that continues it",
    )
    add_results_dir_flag(
        p,
        "where Ray keeps trial results and checkpoints (shared storage on clusters); it must have "
        "room for the running trials' checkpoints (about 90 MB each, twice while one is written) "
        "and the best trial's final weights (45 MB): launch refuses less, and a sweep whose disk "
        "fills stops cleanly, to be resumed once space is freed",
    )
    p.add_argument(
        "--resource-wait",
        type=amount,
        metavar="SECONDS",
        help="on a cluster where no node can hold a trial yet, how long to wait for one. Default: "
        "where an autoscaler runs (ray up, KubeRay), it is asked for such a node and the sweep "
        f"waits up to {defaults.AUTOSCALER_WAIT_S:.0f} s while it adds one, and stops at once if none "
        "of its node types can hold a trial; a cluster without an autoscaler is checked once. 0: "
        "check once",
    )


def add_machine_flags(p: argparse.ArgumentParser, default_device: str | None = "auto") -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=default_device, help=DEVICE_HELP)
    p.add_argument("--num-cpus", type=amount, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--num-gpus", type=amount, help="GPUs of a local Ray instance (logical ones allowed)")


def amount(text: str) -> float:
    """A finite number, 0 or more (CPUs, GPUs, seconds): argparse refuses nan, inf and -1 in one
    line (exit 2), where Ray would have met them."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of 0 or more")
    return value


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of `minimum` or more (a count of nodes, CPUs, GPUs)."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    whole.__name__ = f"whole number of {minimum} or more"
    return whole


def results_folder(args: argparse.Namespace) -> Path:
    return (args.results_dir or defaults.results_dir()).resolve()


def cmd_launch(args: argparse.Namespace) -> int:
    from asha_tune.spaces import describe, load_space
    from asha_tune.sweep import SweepSettings, sweep_name
    from asha_tune.sweep.settings import Rehearsal, check_name

    overrides = list(args.overrides)
    if args.weights is not None:
        overrides.append(f"train.weights={json.dumps(args.weights)}")
    if args.only:
        overrides.append(f"search.only={json.dumps(args.only)}")
    if args.replicates is not None:
        overrides.append(f"search.replicates={args.replicates}")
    space = load_space(args.space, overrides)
    if args.detach and not args.dry_run:
        return launch_detached(args)
    name = check_name(args.name) if args.name is not None else sweep_name(space)
    warm_start = check_name(args.warm_start, "--warm-start") if args.warm_start is not None else None
    if args.dry_run:
        if warm_start is not None:
            from asha_tune.sweep.warm_start import check_warm_start

            check_warm_start(space, name, warm_start)  # what needs no records; the launch checks the rest
        print(describe(space))
        return 0
    rehearse = None
    if args.rehearse is not None:
        if not 0 <= args.rehearse <= 3600:
            raise ConfigError(f"--rehearse {args.rehearse:g}: give an epoch's seconds, 0 to 3600")
        rehearse = Rehearsal(epoch_s=args.rehearse)
    settings = SweepSettings(
        name=name,
        space=space,
        results_dir=results_folder(args),
        tracking_uri=args.tracking_uri or defaults.tracking_uri(),
        study_url=args.study_url or defaults.study_url(),
        # A rehearsal reads no data: no data root needed.
        runtime=runtime_from(args, args.device) if rehearse is None else Runtime(device=args.device),
        address=args.address,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        resource_wait_s=args.resource_wait,
        warm_start=warm_start,
        rehearse=rehearse,
    )
    from asha_tune.api import launch

    return sweep_exit(launch(settings, restart=args.restart, if_exists=args.if_exists))


def given_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Any]:
    """The flags of a command as given (each that differs from its default), in the parser's order."""
    from asha_tune.sweep.jobs import Flag

    found = []
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        value = getattr(args, action.dest, None)
        if not longs or action.dest == "help" or value is None or value == action.default:
            continue
        flag = longs[0]
        if value is True:
            found.append(Flag(flag))
        elif isinstance(value, list):
            found.append(Flag(flag, tuple(str(v) for v in value)))
        else:
            found.append(Flag(flag, (f"{value:g}" if isinstance(value, float) else str(value),)))
    return found


def launch_detached(args: argparse.Namespace) -> int:
    """`launch --detach`: the driver submitted to the cluster as a Ray job; this process ends."""
    from asha_tune.spaces.loading import find_space
    from asha_tune.sweep.detach import DetachRequest
    from asha_tune.sweep.settings import check_name

    name = check_name(args.name) if args.name is not None else None
    request = DetachRequest(
        name=name,
        space=args.space,
        space_file=find_space(args.space).absolute(),
        flags=given_flags(args.launch_parser, args),
        address=args.address or os.environ.get("RAY_ADDRESS") or None,
    )
    from asha_tune.api import launch_detached as submit

    done = submit(request)
    store = f" --tracking-uri {args.tracking_uri}"
    print(
        f"sweep {name}: its driver runs on the Ray cluster at {done.address} as Ray job {done.submission_id}"
    )
    print(f"  dashboard {done.dashboard}; this machine may close")
    logs = f"asha-tune logs {name} --address {done.address} --follow"  # needs no records yet
    print(f"  follow it: asha-tune status {name}{store} · {logs}")
    print(f"  stop it: asha-tune stop {name}{store}")
    print(f"  if its driver is lost, the same command submits another, which continues it: {done.command}")
    return 0


def add_resume_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "resume",
        help="continue an interrupted sweep",
        description="Continue an interrupted sweep. The runtime options replace the "
        "ones it was launched with (e.g. when PACS moved) and are saved. A sweep recorded as "
        "running (its driver was killed) is continued only if that driver is gone.",
        epilog=EXIT_STATUS,
    )
    p.add_argument("name", help="the sweep's name (printed at launch)")
    add_sweep_flags(p)
    add_runtime_flags(p, tracking=False)
    add_machine_flags(p, default_device=None)
    p.set_defaults(handler=cmd_resume)


def cmd_resume(args: argparse.Namespace) -> int:
    from asha_tune.api import resume

    return sweep_exit(resume(saved_settings(args)))


def add_extend_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extend",
        help="go on with N more trials of a sweep that ended or was interrupted",
        description="Go on with N more trials of a finished or interrupted sweep, in the same Optuna "
        "study (its sampler sees every earlier trial), under the same MLflow parent run and with the "
        "same ASHA rungs; the new trial runs are tagged asha_tune.extension. A replicated search "
        "extends every replicate. The space is the one saved at launch (sweep.json), never the space "
        "file again; a grid or list space is refused (its configurations are fixed), and so is a sweep "
        "whose driver is running. A driver killed during the extension is continued by asha-tune resume.",
        epilog=EXIT_STATUS,
    )
    p.add_argument("name", help="the sweep's name (printed at launch)")
    p.add_argument("--trials", type=at_least(1), required=True, help="how many trials to add (1 or more)")
    add_sweep_flags(p)
    add_runtime_flags(p, tracking=False)
    add_machine_flags(p, default_device=None)
    p.set_defaults(handler=cmd_extend)


def cmd_extend(args: argparse.Namespace) -> int:
    from asha_tune.api import extend

    return sweep_exit(extend(saved_settings(args), args.trials))


def saved_settings(args: argparse.Namespace) -> Any:
    """A sweep's saved settings, with the runtime flags of resume and confirm replacing theirs
    (each of the settings' RUNTIME_FIELDS has its flags here)."""
    from asha_tune.sweep.settings import RUNTIME_FIELDS, SweepSettings

    settings = SweepSettings.load(args.name, results_folder(args))
    if settings.rehearse is not None and not (args.data_root or args.cache_dir):  # reads no data
        device = args.device or settings.runtime.device
        runtime = settings.runtime.model_copy(update={"device": device}) if args.device else None
    elif args.data_root or args.cache_dir or args.device:
        runtime = runtime_from(args, args.device or settings.runtime.device, base=settings.runtime)
    else:
        runtime = None
    given = {
        "runtime": runtime,
        "address": args.address or None,
        "num_cpus": args.num_cpus,
        "num_gpus": args.num_gpus,
        "resource_wait_s": args.resource_wait,
    }
    return settings.model_copy(update={k: given[k] for k in RUNTIME_FIELDS if given[k] is not None})


def add_confirm_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "confirm",
        help="re-run a finished sweep's best configurations with new seeds",
        description="Re-run the K best configurations of a finished sweep with S new seeds "
        "each, to full budget, nested under the sweep in MLflow. The same command "
        "again continues an interrupted confirmation, or prints its report.",
    )
    p.add_argument("name", help="the sweep's name")
    p.add_argument("--top", type=int, required=True, metavar="K", help="how many of its best trials")
    p.add_argument("--seeds", type=int, required=True, metavar="S", help="new seeds per configuration")
    add_sweep_flags(p)
    add_runtime_flags(p, tracking=False)
    add_machine_flags(p, default_device=None)
    p.set_defaults(handler=cmd_confirm)


def cmd_confirm(args: argparse.Namespace) -> int:
    from asha_tune.api import confirm

    return sweep_exit(confirm(saved_settings(args), args.top, args.seeds).sweep, confirmation=True)


def sweep_exit(outcome: Any, confirmation: bool = False) -> int:
    """0 when the sweep ran through, 130 when it was interrupted, 1 when every trial (every run of
    a confirmation) failed."""
    if not outcome.finished:
        return 130
    if all_failed(outcome.trials):
        n, settings = len(outcome.trials), outcome.settings
        why = "(each reason is printed above and kept in MLflow)"
        if confirmation:
            line = f"asha-tune confirm: error: {all_failed_text(n, 'run')} {why}"
        else:
            line = (
                f"asha-tune: error: {all_failed_text(n)} {why}; once fixed, start it over: "
                f"asha-tune launch --space {settings.space.name} --name {settings.name} --restart"
            )
        print(line, file=sys.stderr)
        return 1
    return 0


def add_spaces_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spaces", help="list the search spaces")
    p.set_defaults(handler=cmd_spaces)


def cmd_spaces(args: argparse.Namespace) -> int:
    from asha_tune.spaces import list_spaces, load_space, needs, read_yaml

    for name, path in list_spaces().items():
        try:  # a file that cannot be read is one line of the listing; the others are listed
            description = str(read_yaml(path).get("description", "")).strip().splitlines()
        except ConfigError as err:
            print(f"{name:16s} unreadable: {err.problems[0]}")
            continue
        try:
            need = needs(load_space(path))
        except ConfigError as err:
            need = f"invalid: {err.problems[0]}"
        print(f"{name:16s} {description[0] if description else ''}\n{'':16s} needs {need}")
    print(
        f"\nspaces are searched in ${SPACES_ENV}, ./search_spaces and the package's; "
        "a space runs with asha-tune launch --space NAME"
    )
    return 0


def add_ui_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="open the MLflow UI on the store a sweep used")
    p.add_argument("name", nargs="?", help="a sweep (default: the store in this folder)")
    add_results_dir_flag(p, "where the sweep's results are")
    p.add_argument("--tracking-uri", help="an MLflow store instead of a sweep's")
    p.add_argument("--port", type=port, default=5000, help="the UI's port, 1 to 65535 (default 5000)")
    p.set_defaults(handler=cmd_ui)


def port(text: str) -> int:
    """A TCP port a server can listen on, refused by argparse (one line, exit 2) otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1 to 65535)")
    return value


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Nothing listens on the UI's port yet (MLflow's server would print "Address already in use"
    and exit 0). Bound as the server binds (SO_REUSEADDR), so a port just freed is not refused."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"--port {port}: {host}:{port} is taken ({err.strerror}; another asha-tune ui or MLflow "
                "server?): choose another --port"
            ) from None


def cmd_ui(args: argparse.Namespace) -> int:
    from asha_tune.sweep import SweepSettings
    from asha_tune.tracking import Tracker
    from asha_tune.tracking.client import check_store, experiment_url, serve_ui

    uri, settings = args.tracking_uri, None
    if args.name:
        settings = SweepSettings.load(args.name, results_folder(args))
        uri = uri or settings.tracking_uri
    uri = uri or defaults.tracking_uri()
    remote = uri.startswith(("http://", "https://"))
    if not remote:  # before the server starts: one line, exit 2, instead of MLflow's own lines
        check_store(uri)
        check_port_free(args.port)
    base = uri.rstrip("/") if remote else f"http://127.0.0.1:{args.port}"
    if settings and settings.parent_run_id:  # the sweep's runs, in MLflow's model-training view
        experiment = Tracker(uri).experiment_of(settings.parent_run_id)
        print(f"sweep {settings.name}: {experiment_url(base, experiment)}", flush=True)
    if remote:
        print(f"the sweep tracks to an MLflow server: open {uri}")
        return 0
    print(f"MLflow UI for {uri} at {base} (Ctrl-C to stop)", flush=True)
    return serve_ui(uri, args.port)


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="sweeps against each other, a replayed grid and the published figures")
    p.add_argument("sweeps", nargs="*", metavar="SWEEP", help="sweep names (as launch --name gave them)")
    p.add_argument("--tracking-uri", help="the MLflow store (default: the first sweep's, else ./mlflow.db)")
    add_results_dir_flag(p, "where the sweeps' results are")
    p.add_argument("--out", type=Path, help="folder for the table, CSV and PNGs (default ./compare-<sweeps>)")
    p.add_argument(
        "--importances",
        choices=[*defaults.IMPORTANCE_EVALUATORS, "none"],
        default=defaults.IMPORTANCE_EVALUATORS[0],
        help="each search's parameter importances, of its study's objective (default %(default)s)",
    )
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from asha_tune.analysis.compare import run_compare

    if not args.sweeps:
        raise ConfigError("name at least one sweep: asha-tune compare SWEEP [SWEEP ...]")
    uri = sweeps_store(args.sweeps, args)
    out = (args.out or Path.cwd() / f"compare-{'+'.join(args.sweeps)}").resolve()
    if line := unwritable(out, "--out"):
        raise ConfigError(line)
    evaluator = None if args.importances == "none" else args.importances
    with naming_failed_writes(out):
        _, text, run_id = run_compare(
            args.sweeps, uri, out, study_importances(evaluator) if evaluator else None
        )
    print(text)
    print(
        f"\nwritten to {out} (comparison.txt, comparison.csv, tables as Markdown and LaTeX, importances, "
        f"PNGs); MLflow comparison run {run_id}"
    )
    return 0


def study_importances(evaluator: str) -> Callable[[str, list[str]], Any]:
    """compare's importances: the sweep room's (Optuna), one evaluator for every search."""

    def compute(study_url: str, studies: list[str]) -> Any:
        from asha_tune.sweep.importance import importances

        return importances(study_url, studies, evaluator)

    return compute


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page: does the search beat the grid (opens offline)",
        description="Write one HTML page with the answer compare gives for these sweeps: the verdicts, "
        "the tables, interactive plots, every trial and the provenance. It reads only the records and "
        "needs no network to open.",
    )
    p.add_argument("sweeps", nargs="*", metavar="SWEEP", help="sweep names (as launch --name gave them)")
    p.add_argument("--tracking-uri", help="the MLflow store (default: the sweeps' own, else ./mlflow.db)")
    add_results_dir_flag(p, "where the sweeps' results are")
    p.add_argument("--out", type=Path, metavar="FILE.html", help="the page (default ./report-<sweeps>.html)")
    p.add_argument(
        "--ui-url",
        metavar="URL",
        help="an MLflow UI on the same store (e.g. http://127.0.0.1:5000 from asha-tune ui): runs link "
        "to it (default: the tracking server, where the store is one; else runs are plain ids)",
    )
    p.set_defaults(handler=cmd_report)


def sweeps_store(names: list[str], args: argparse.Namespace) -> str:
    """The one store the named sweeps were recorded in: --tracking-uri, else their saved settings'
    (refused when they name two), else ./mlflow.db; where none of them is found anywhere, one
    line that says so (not that ./mlflow.db is missing)."""
    from asha_tune.sweep import SweepSettings
    from asha_tune.tracking.client import local_store

    if args.tracking_uri:
        return str(args.tracking_uri)
    stores: dict[str, str] = {}
    results = results_folder(args)
    for name in names:
        try:
            stores[name] = SweepSettings.load(name, results).tracking_uri
        except ConfigError:
            continue
    if len(set(stores.values())) > 1:
        which = ", ".join(f"{name} in {uri}" for name, uri in stores.items())
        raise ConfigError(f"the sweeps were recorded in different stores ({which}): a report reads one store")
    uri = next(iter(stores.values()), None) or defaults.tracking_uri()
    db = local_store(uri)
    if not stores and db is not None and not db.is_file():
        what = f"sweep {names[0]}" if len(names) == 1 else f"sweeps {', '.join(names)}"
        raise ConfigError(
            f"no {what}: none in {results}, and no MLflow store at {db}; check the name, or pass "
            "--results-dir or --tracking-uri where it ran"
        )
    return uri


@contextmanager
def naming_failed_writes(out: Path) -> Iterator[None]:
    """A write under --out that fails after the check (a disk that fills) is one line naming the
    file and the fix; the sweeps' records are only read, so nothing of them is lost."""
    from asha_tune.files import write_problem

    try:
        yield
    except OSError as err:
        where = Path(err.filename) if err.filename else out
        problem = write_problem(err, where.parent if err.filename else out)
        fix = "free space there or choose another --out" if problem.full else "choose another --out"
        raise AshaTuneError(
            f"cannot write {where} ({problem.text}): {fix}; the sweeps' records are unchanged"
        ) from None


def cmd_report(args: argparse.Namespace) -> int:
    from asha_tune.analysis.report import run_report

    if not args.sweeps:
        raise ConfigError("name at least one sweep: asha-tune report SWEEP [SWEEP ...]")
    out = (args.out or Path.cwd() / f"report-{'+'.join(args.sweeps)}.html").resolve()
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: name the page, e.g. {out / 'report.html'}")
    if line := unwritable(out.parent, "--out", what=str(out)):
        raise ConfigError(line)
    store = sweeps_store(args.sweeps, args)
    with naming_failed_writes(out):
        page = run_report(args.sweeps, store, out, args.ui_url)
    verdicts = [v.text for part in page.parts for v in part.verdicts]
    print("\n".join(verdicts) or "no verdict: no trial reported a target accuracy")
    print(f"\nwritten to {out} ({out.stat().st_size / 1e6:.1f} MB; opens offline in a browser)")
    return 0


# --- a sweep that runs or ran: status, list, stop --------------------------------------------


def add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        help="the MLflow store (default: the one the sweep's sweep.json names, else ./mlflow.db)",
    )
    add_results_dir_flag(p, "where the sweep's sweep.json is, if this machine sees it")


def add_status_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="where a sweep stands: state, driver, trials, best so far, ETA, last error, what next",
        description="Where a sweep stands, read from its records (from any machine that reaches its "
        "MLflow store, while it runs and long after): its state, whether its driver is alive and "
        "where, its trials by state, the best so far with its standard error, elapsed time and an "
        "ETA from the trials' own timings, the last error, and the commands that go on.",
    )
    p.add_argument("name", nargs="?", help="the sweep (default: the one launched last in the store)")
    add_store_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from asha_tune.monitor import status

    found = status(args.name, args.tracking_uri, args.results_dir)
    print(json.dumps(found.record, indent=2) if args.json else "\n".join(found.lines))
    return 0


def add_list_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="every sweep in an MLflow store, newest first")
    p.add_argument("--tracking-uri", help="the MLflow store (default ./mlflow.db)")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from asha_tune.monitor import sweeps

    found = sweeps(args.tracking_uri)
    print(json.dumps(found.record, indent=2) if args.json else "\n".join(found.lines))
    return 0


def add_stop_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stop",
        help="stop a running sweep from any terminal or machine, as Ctrl-C does (resume continues it)",
        description="Ask a running sweep's driver, wherever it runs, to stop as Ctrl-C stops it: Tune "
        "saves its state and the records are closed as interrupted, so asha-tune resume continues it. "
        "The request goes through the sweep's MLflow store; the driver reads it within seconds.",
    )
    p.add_argument("name", help="the sweep")
    add_store_flags(p)
    p.add_argument(
        "--wait",
        type=amount,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the driver to close the records (default 120; 0: ask and return)",
    )
    p.set_defaults(handler=cmd_stop)


def cmd_stop(args: argparse.Namespace) -> int:
    from asha_tune.monitor import stop

    print(stop(args.name, args.tracking_uri, args.results_dir, args.wait))
    return 0


def add_logs_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "logs",
        help="a detached sweep's driver output (launch --detach), from its Ray job",
        description="Print the output of a sweep's detached driver (launch --detach), read from its "
        "Ray job's logs on the cluster; the job is found from the sweep's records, or with --address "
        "on that cluster (a driver that failed before it recorded anything).",
    )
    p.add_argument("name", help="the sweep")
    add_store_flags(p)
    p.add_argument(
        "--address",
        help="read the sweep's latest job on this Ray cluster (HOST:PORT, or its dashboard's URL) "
        "instead of finding it from the records",
    )
    p.add_argument(
        "--follow", action="store_true", help="keep printing as the driver writes, until its job ends"
    )
    p.set_defaults(handler=cmd_logs)


def cmd_logs(args: argparse.Namespace) -> int:
    from asha_tune.api import driver_logs
    from asha_tune.monitor import detached_of

    if args.address:
        chunks = driver_logs(args.name, args.follow, address=args.address)
    else:
        detached = detached_of(args.name, args.tracking_uri, args.results_dir)
        chunks = driver_logs(args.name, args.follow, detached=detached)
    for chunk in chunks:
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return 0


# --- asha-tune cluster -----------------------------------------------------------------------


def add_cluster_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="a local cluster: Ray head + worker nodes, PostgreSQL, MLflow server")
    actions = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    for name, text in (
        ("up", "start it (or restart what is down), all on 127.0.0.1"),
        ("status", "list its nodes and services"),
        ("down", "stop exactly the processes `up` started; keep the data"),
    ):
        q = actions.add_parser(name, help=text)
        q.add_argument(
            "--dir",
            type=Path,
            help=f"the cluster's folder (default ${defaults.CLUSTER_DIR_ENV} or ./{defaults.CLUSTER_DIR})",
        )
        if name == "up":
            # Refused by argparse (one line, exit 2) before PostgreSQL, MLflow or Ray start.
            q.add_argument(
                "--workers", type=at_least(1), help="Ray worker nodes of a new cluster (default 2)"
            )
            q.add_argument(
                "--worker-cpus", type=at_least(1), help="CPUs per worker (default: CPU count / workers)"
            )
            q.add_argument("--worker-gpus", type=at_least(0), default=0, help="GPUs per worker (default 0)")
            q.add_argument(
                "--head-cpus", type=at_least(0), default=0, help="CPUs of the head for trials (default 0)"
            )
    p.set_defaults(handler=cmd_cluster)


def cmd_cluster(args: argparse.Namespace) -> int:
    from asha_tune import cluster

    directory = (args.dir or cluster.default_dir()).resolve()
    if args.action == "down":
        cluster.down(directory)
        return 0
    if args.action == "up":
        state = cluster.up(
            directory,
            workers=args.workers,
            worker_cpus=args.worker_cpus,
            worker_gpus=args.worker_gpus,
            head_cpus=args.head_cpus,
        )
        print("\n".join(cluster.describe(state) + cluster.launch_hint(state)))
        return 0
    state = cluster.load(directory)
    print("\n".join(cluster.describe(state) + cluster.launch_hint(state)))
    return 0 if all(s.running for s in state.services.values()) else 1


# --- entry point -----------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_trial_parser,
    add_launch_parser,
    add_resume_parser,
    add_extend_parser,
    add_confirm_parser,
    add_status_parser,
    add_list_parser,
    add_stop_parser,
    add_logs_parser,
    add_spaces_parser,
    add_ui_parser,
    add_compare_parser,
    add_report_parser,
    add_cluster_parser,
]


def build_parser() -> Parser:
    parser = Parser(prog="asha-tune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # MLflow's sqlalchemy store uses a loader strategy sqlalchemy 2.1 deprecates: not ours to fix.
    warnings.filterwarnings("ignore", "The ``noload`` loader strategy", DeprecationWarning, "mlflow")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    prog = f"asha-tune {args.command}"
    errors.program = prog
    if extra:
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extra)}\n")
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except AshaTuneError as err:
        return fail(prog, err)
    except BrokenPipeError:
        return closed_stdout()
    except Exception as err:
        if os.environ.get(defaults.DEBUG_ENV, "") not in ("", "0"):
            raise
        return unexpected(prog, err, error_log_folder(args))
    except KeyboardInterrupt:
        how = {
            "trial": " (continue with --resume)",
            "launch": " (continue with asha-tune resume NAME)",
            "resume": " (continue with asha-tune resume NAME)",
            "extend": " (continue with asha-tune resume NAME)",
            "confirm": " (continue with the same asha-tune confirm command)",
        }.get(args.command, "")
        print(f"{prog}: interrupted; what was recorded is kept{how}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
