"""`asha-tune extend NAME --trials N` without Ray: what it records before the sweep runs again (the
saved space grown, the extension in sweep.json and on the parent run, Tune's old snapshot set
aside), how many more trials the study then asks, the trial runs' tag, and each refusal as one line.

The sweep itself is not run (that is Ray's, in tests/integration/test_extend.py): `single._run` is
replaced by a stop that keeps the settings it was given."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import create_trial

from asha_tune.cli import main
from asha_tune.errors import ConfigError
from asha_tune.spaces import load_space
from asha_tune.sweep import single
from asha_tune.sweep.extend import check_extendable, first_new_trial, grown_space, shelve_snapshot
from asha_tune.sweep.settings import Extension, SweepSettings, extension_of
from asha_tune.sweep.study import WARM_START_ATTR, StudyHandle, TrialState, create_study
from asha_tune.tracking import Tracker
from asha_tune.tracking.tags import (
    COMPLETED,
    DRIVER_TAG,
    EXTENSION_TAG,
    EXTENSIONS_TAG,
    HEARTBEAT_TAG,
    RUNNING,
    SPACE_ARTIFACT,
    STATUS_TAG,
)
from tests.helpers.data import make_synthetic_pacs
from tests.helpers.mlflow import mlflow_store

NAME = "s1"


class Started(BaseException):
    """The command reached the sweep's run: everything before it was recorded."""


def plain_settings(tmp_path: Path, **update: object) -> SweepSettings:
    """A quickstart sweep's settings, stores named but never opened."""
    base = SweepSettings(
        name="s",
        space=load_space("quickstart"),
        results_dir=tmp_path,
        tracking_uri="sqlite:///x.db",
        study_url="sqlite:///y.db",
        runtime={"data_root": tmp_path},
    )
    return base.model_copy(update=update)


@pytest.fixture
def ran(monkeypatch) -> list[SweepSettings]:
    seen: list[SweepSettings] = []

    def run(settings: SweepSettings, *args: object, **kwargs: object) -> None:
        seen.append(settings)
        raise Started

    monkeypatch.setattr(single, "_run", run)
    return seen


@pytest.fixture
def flags(tmp_path) -> dict[str, str]:
    data = make_synthetic_pacs(tmp_path / "pacs", per_class=1, size=8)
    return {
        "--results-dir": str(tmp_path / "results"),
        "--tracking-uri": mlflow_store(tmp_path / "mlflow.db"),
        "--study-url": f"sqlite:///{tmp_path / 'optuna.db'}",
        "--cache-dir": str(tmp_path / "cache"),
        "--data-root": str(data),
    }


def command(name: str, flags: dict[str, str], *args: str, keep: tuple[str, ...] = ()) -> int:
    argv = [name, *args]
    for flag, value in flags.items():
        if name == "launch" or flag in ("--results-dir", *keep):
            argv += [flag, value]
    return main(argv)


def launched(flags: dict[str, str], ran: list[SweepSettings], status: str = COMPLETED) -> SweepSettings:
    """A quickstart sweep launched (its run stopped before Ray), its parent run ended as `status`."""
    with pytest.raises(Started):
        command("launch", flags, "--space", "quickstart", "--name", NAME, "--device", "cpu")
    settings = ran.pop()
    Tracker(settings.tracking_uri).set_tags(settings.run_id, {STATUS_TAG: status})
    return settings


def test_extend_grows_the_saved_space_records_the_extension_and_sets_tunes_snapshot_aside(flags, ran):
    settings = launched(flags, ran)
    before = settings.space.num_trials
    tune_files = ["tuner.pkl", "experiment_state-2026-01-01_00-00-00.json", "search_gen_state-x.json"]
    for name in tune_files:
        (settings.sweep_dir / name).write_text("{}")
    with pytest.raises(Started):
        command("extend", flags, NAME, "--trials", "3")
    (running,) = ran
    assert running.space.num_trials == before + 3
    # The study held no trial yet: the sweep's own `before` trials come first, then the extension's.
    assert running.extensions == [Extension(trials=3, first_trial=before)]
    saved = SweepSettings.load(NAME, settings.results_dir)
    assert saved.space.num_trials == before + 3
    assert saved.extensions == running.extensions
    assert saved.run_id == settings.run_id  # the same parent run
    assert saved.space.model_copy(update={"search": settings.space.search}) == settings.space
    # Tune's earlier snapshot is kept aside, so the resume starts Tune afresh on the same folder.
    shelf = settings.sweep_dir / "tune-before-extension-1"
    assert sorted(p.name for p in shelf.iterdir()) == sorted(tune_files)
    assert not any((settings.sweep_dir / name).exists() for name in tune_files)
    # The parent run: the grown space (what status counts), the extension, running again.
    client = MlflowClient(settings.tracking_uri)
    tags = client.get_run(settings.run_id).data.tags
    assert tags[EXTENSIONS_TAG] == "1"
    assert tags[STATUS_TAG] == RUNNING
    recorded = client.download_artifacts(settings.run_id, SPACE_ARTIFACT)
    assert json.loads(Path(recorded).read_text())["search"]["num_trials"] == before + 3

    # A second extension numbers its trials on from the count so far (2 asked of `before` + 3).
    Tracker(settings.tracking_uri).set_tags(settings.run_id, {STATUS_TAG: COMPLETED})
    handle = StudyHandle(saved.study_url, NAME, saved.space)
    for _ in range(2):
        number, _values = handle.ask("t", known=set())
        handle.tell(number, TrialState.COMPLETE, 1.0)
    with pytest.raises(Started):
        command("extend", flags, NAME, "--trials", "1")
    assert ran[-1].extensions == [
        Extension(trials=3, first_trial=before),
        Extension(trials=1, first_trial=before + 3),
    ]
    assert ran[-1].space.num_trials == before + 4


def test_the_study_asks_exactly_n_more_trials_once_extended(tmp_path):
    space = load_space("quickstart")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(url, "s", space)

    def ask_all(handle: StudyHandle) -> list[int]:
        numbers = []
        while (asked := handle.ask(f"t{len(numbers)}", known=set(numbers))) is not None:
            numbers.append(asked[0])
            handle.tell(asked[0], TrialState.COMPLETE, float(asked[0]))
        return numbers

    first = ask_all(StudyHandle(url, "s", space))
    assert first == list(range(space.num_trials))
    assert ask_all(StudyHandle(url, "s", space)) == []  # finished: nothing more
    more = ask_all(StudyHandle(url, "s", grown_space(space, 3)))
    assert more == [space.num_trials, space.num_trials + 1, space.num_trials + 2]


def test_an_extension_numbers_its_trials_past_a_warm_start_and_the_trials_still_to_ask(tmp_path):
    """Interrupted after one trial of 3, with 2 warm-start trials: trials 2-4 are still the
    sweep's own (numbers 3 and 4 not yet asked), so the extension's first trial is 5."""
    settings = plain_settings(tmp_path, study_url=f"sqlite:///{tmp_path / 'optuna.db'}")
    settings = settings.model_copy(
        update={"space": grown_space(settings.space, 3 - settings.space.num_trials)}
    )
    study = create_study(settings.study_url, settings.name, settings.space)
    for _ in range(2):
        study.add_trial(create_trial(value=0.5, user_attrs={WARM_START_ATTR: "earlier"}))
    handle = StudyHandle(settings.study_url, settings.name, settings.space)
    number, _values = handle.ask("t", known={0, 1})
    assert number == 2
    assert first_new_trial(settings) == 5
    handle.tell(number, TrialState.COMPLETE, 1.0)
    for _ in range(2):
        asked = handle.ask("t", known=set())
        assert asked is not None
        handle.tell(asked[0], TrialState.COMPLETE, 1.0)
    assert first_new_trial(settings) == 5  # the sweep's 3 asked: still past them


def test_trial_numbers_from_an_extension_on_belong_to_it():
    extensions = [Extension(trials=2, first_trial=4), Extension(trials=3, first_trial=6)]
    assert [extension_of(extensions, n) for n in (0, 3, 4, 5, 6, 8)] == [None, None, 1, 1, 2, 2]
    assert extension_of([], 7) is None


def test_an_extensions_trial_runs_are_tagged_with_it(tmp_path):
    from asha_tune.sweep.callbacks import TrackingCallback

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    experiment = tracker.experiment("ext")
    parent = tracker.start_run(experiment, "sweep")
    space = load_space("quickstart")
    callback = TrackingCallback(
        uri, experiment, parent, space, extensions=[Extension(trials=1, first_trial=1)]
    )
    for number in (0, 1):
        t = SimpleNamespace(
            config={"trial_number": number, "values": {"shaping.p0": 0.5, "shaping.convs": [1]}},
            trial_id=f"t{number}",
            last_result={},
            error_file=None,
            num_failures=0,
        )
        callback.on_trial_start(0, [t], t)
    callback.get_state()  # what is queued is written
    tags = {
        run.data.tags["asha_tune.trial_number"]: run.data.tags.get(EXTENSION_TAG)
        for run in tracker.child_runs(experiment, parent)
    }
    assert tags == {"0": None, "1": "1"}


def test_a_grid_a_list_a_replicate_and_a_confirmation_cannot_grow(tmp_path):
    def settings(**update: object) -> SweepSettings:
        return plain_settings(tmp_path, **update)

    check_extendable(settings(), 1)  # an optuna space grows
    with pytest.raises(ConfigError, match=r"^--trials 0: extend adds at least 1 trial$"):
        check_extendable(settings(), 0)
    grid = load_space("paper_grid")
    with pytest.raises(ConfigError, match=r"^sweep s runs a list space: its 56 configurations are fixed"):
        check_extendable(settings(space=grid), 2)
    with pytest.raises(ConfigError, match=r"^s is a replicate of r: extend the replicated search"):
        check_extendable(settings(replicate_of="r", replicate=0, nested_under="p"), 2)
    with pytest.raises(ConfigError, match=r"^s is a confirmation"):
        check_extendable(settings(nested_under="p"), 2)


def test_bad_input_is_one_line_and_exit_2(flags, ran, capsys):
    assert command("extend", flags, "nowhere", "--trials", "2") == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"asha-tune extend: error: no sweep nowhere in {flags['--results-dir']}"
    ]
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as exit_:
            command("extend", flags, NAME, "--trials", bad)
        assert exit_.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("asha-tune extend: error: argument --trials")
    assert not ran


def test_a_sweep_whose_driver_is_alive_is_refused_and_left_as_it_was(flags, ran, capsys):
    settings = launched(flags, ran, status=RUNNING)
    tracker = Tracker(settings.tracking_uri)
    beat = {"at": __import__("time").time(), "host": "elsewhere", "pid": 7}
    tracker.set_tags(settings.run_id, {HEARTBEAT_TAG: json.dumps(beat), DRIVER_TAG: json.dumps(beat)})
    capsys.readouterr()
    assert command("extend", flags, NAME, "--trials", "2") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"asha-tune extend: error: sweep {NAME} is running (its driver: alive (pid 7 on elsewhere"
    )
    assert "extend it once it has ended" in line
    assert SweepSettings.load(NAME, settings.results_dir).space == settings.space  # nothing changed
    assert tracker.tags(settings.run_id)[STATUS_TAG] == RUNNING
    assert EXTENSIONS_TAG not in tracker.tags(settings.run_id)
    assert not ran


def test_a_sweep_whose_driver_is_gone_is_resumed_before_it_is_extended(flags, ran, capsys):
    settings = launched(flags, ran, status=RUNNING)
    old = {"at": 0.0, "host": "elsewhere", "pid": 7}  # silent for decades: gone
    Tracker(settings.tracking_uri).set_tags(settings.run_id, {HEARTBEAT_TAG: json.dumps(old)})
    with pytest.raises(Started):
        command("extend", flags, NAME, "--trials", "2")
    # First its own unfinished trials, from Tune's snapshot: the saved space, not yet grown.
    assert ran[-1].space.num_trials == settings.space.num_trials
    assert ran[-1].extensions == []
    assert (
        f"{NAME} is unfinished: resuming it first, then extending it by 2 trials" in capsys.readouterr().out
    )


def test_shelving_without_a_snapshot_moves_nothing(tmp_path):
    assert shelve_snapshot(tmp_path, 1) is None
    assert not (tmp_path / "tune-before-extension-1").exists()


def test_a_snapshot_without_tunes_experiment_state_starts_tune_afresh(tmp_path, monkeypatch):
    """A driver killed after Tune wrote tuner.pkl, before its first experiment state: the resume
    builds a new Tuner on the sweep's current settings (an extension's grown count)."""
    from asha_tune.sweep import tuner

    settings = plain_settings(tmp_path)
    settings.sweep_dir.mkdir()
    (settings.sweep_dir / tuner.TUNER_FILE).write_bytes(b"not read")
    monkeypatch.setattr(tuner, "new_tuner", lambda *args: "fresh")
    assert tuner.restored_tuner(settings, None, "1") == "fresh"  # type: ignore[arg-type]


def test_the_progress_line_of_an_extension_counts_the_trials_it_added(tmp_path):
    """Tune knows only the trials since the extension (its earlier snapshot is set aside): the
    progress line counts them against the trials the extension added, not the sweep's total."""
    from asha_tune.sweep.callbacks import ProgressCallback
    from asha_tune.sweep.tuner import _callbacks

    settings = plain_settings(tmp_path, parent_run_id="r")
    space = settings.space
    (plain,) = [c for c in _callbacks(settings, None, "0", "w") if isinstance(c, ProgressCallback)]
    assert plain.num_trials == space.num_trials
    grown = space.model_copy(
        update={"search": space.search.model_copy(update={"num_trials": space.num_trials + 3})}
    )
    extended = settings.model_copy(
        update={"space": grown, "extensions": [Extension(trials=3, first_trial=space.num_trials)]}
    )
    (progress,) = [c for c in _callbacks(extended, None, "0", "w") if isinstance(c, ProgressCallback)]
    assert progress.num_trials == 3
    # A warm start's trials come first in the study: the extension's first number moves, not its count.
    warm = extended.model_copy(update={"extensions": [Extension(trials=3, first_trial=space.num_trials + 2)]})
    (progress,) = [c for c in _callbacks(warm, None, "0", "w") if isinstance(c, ProgressCallback)]
    assert progress.num_trials == 3
