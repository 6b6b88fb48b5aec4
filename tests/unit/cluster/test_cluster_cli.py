"""`asha-tune cluster` without starting anything: its errors are one line, nothing is left behind;
the tracking and study clients turn a lost server into one clear line."""

from __future__ import annotations

import pytest

from asha_tune.cli import main
from asha_tune.cluster import postgres
from asha_tune.cluster.processes import free_port


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0], err
    return err[0]


def test_up_without_postgresql_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(postgres, "POSTGRES_ROOT", tmp_path / "nowhere")
    assert main(["cluster", "up", "--dir", str(tmp_path / "c")]) == 1
    line = one_error_line(capsys)
    assert line.startswith("asha-tune cluster: error: PostgreSQL is not installed")
    assert "apt-get install" in line
    assert not (tmp_path / "c").exists()  # nothing started, nothing written


def test_status_and_down_of_no_cluster_are_one_line(tmp_path, capsys):
    for action in ("status", "down"):
        assert main(["cluster", action, "--dir", str(tmp_path)]) == 1
        assert f"no local cluster in {tmp_path}" in one_error_line(capsys)


@pytest.mark.parametrize(("flag", "value", "minimum"), [("--workers", "0", 1), ("--worker-cpus", "-1", 1)])
def test_up_refuses_a_count_below_its_minimum_before_anything_starts(tmp_path, capsys, flag, value, minimum):
    with pytest.raises(SystemExit) as exit_info:  # argparse: exit 2, before PostgreSQL, MLflow or Ray
        main(["cluster", "up", "--dir", str(tmp_path), flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: {value} is below {minimum}" in one_error_line(capsys)
    assert not any(tmp_path.iterdir())  # nothing was started or recorded


def test_a_tracking_server_that_is_gone_is_one_clear_error(monkeypatch):
    from asha_tune.tracking import Tracker, TrackingUnavailableError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingUnavailableError) as err:
        Tracker(uri).experiment("x")
    assert (
        str(err.value) == f"the MLflow tracking server at {uri} did not answer (connection refused); "
        "what it recorded is kept"
    )


def test_a_study_database_that_is_gone_is_retried_then_one_clear_error(monkeypatch):
    import time

    from asha_tune.defaults import STUDY_RETRY_ENV
    from asha_tune.spaces import SearchSpace
    from asha_tune.sweep.study import StudyHandle, StudyUnavailableError

    monkeypatch.setenv(STUDY_RETRY_ENV, "3")
    url = f"postgresql://asha@127.0.0.1:{free_port()}/optuna"
    space = SearchSpace.model_validate({"name": "x", "search": {"num_trials": 1}})
    started = time.monotonic()
    with pytest.raises(StudyUnavailableError) as err:
        StudyHandle(url, "x", space).history()
    waited = time.monotonic() - started
    assert 3 <= waited < 30  # it kept trying for the window, then gave up once
    assert str(err.value).startswith(f"the Optuna storage {url} did not answer for 3 s (")
    assert "\n" not in str(err.value)
