"""asha-tune sets what Ray and MLflow read from the environment only while it needs it."""

from __future__ import annotations

import os

from asha_tune.environ import scoped_environ
from asha_tune.sweep.session import session_environ
from asha_tune.tracking import Tracker
from tests.helpers.mlflow import mlflow_store


def test_a_scoped_variable_is_set_inside_and_restored_after(monkeypatch):
    monkeypatch.setenv("ASHA_TEST_KEEP", "mine")
    monkeypatch.delenv("ASHA_TEST_NEW", raising=False)
    with scoped_environ({"ASHA_TEST_KEEP": "theirs", "ASHA_TEST_NEW": "1"}):
        assert os.environ["ASHA_TEST_KEEP"] == "theirs"
        assert os.environ["ASHA_TEST_NEW"] == "1"
    assert os.environ["ASHA_TEST_KEEP"] == "mine"
    assert "ASHA_TEST_NEW" not in os.environ
    with scoped_environ({"ASHA_TEST_KEEP": "theirs", "ASHA_TEST_NEW": None}, keep_existing=True):
        assert os.environ["ASHA_TEST_KEEP"] == "mine"  # the user's setting wins
    assert os.environ["ASHA_TEST_KEEP"] == "mine"


def test_a_tracker_leaves_the_environment_as_it_found_it(tmp_path):
    before = dict(os.environ)
    tracker = Tracker(mlflow_store(tmp_path / "mlflow.db"))
    run = tracker.start_run(tracker.experiment("e"), "r")
    tracker.finish(run, "completed")
    assert dict(os.environ) == before


def test_a_local_session_asks_for_token_auth_and_loopback_but_the_user_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    env = session_environ(None)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600  # made once, for its owner only
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert "RAY_AUTH_MODE" not in session_environ(None)  # turned off by the user: left off
    # A client joining a cluster on this machine's loopback keeps it on loopback.
    assert session_environ("127.0.0.1:6379")["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
