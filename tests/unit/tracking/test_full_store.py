"""A full tracking store (issue 24): one line naming the store, and what it recorded kept.

The store is a real sqlite MLflow store made full by SQLite itself (`max_page_count` at its
current size: SQLite then answers "database or disk is full", as on a full file system)."""

from __future__ import annotations

import gc
import sqlite3

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from asha_tune.tracking import Tracker
from asha_tune.tracking.client import StoreFullError


def _capped(path) -> object:
    """Every new SQLite connection capped at the file's present size; pooled ones dropped."""
    with sqlite3.connect(path) as con:
        pages = con.execute("PRAGMA page_count").fetchone()[0]

    def cap(dbapi_connection, record) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(Engine, "connect", cap)
    for engine in [o for o in gc.get_objects() if isinstance(o, Engine)]:
        engine.dispose()
    return cap


def test_a_full_store_is_one_line_and_keeps_what_it_recorded(tmp_path):
    db = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{db}")
    run = tracker.start_run(tracker.experiment("e"), name="r", params={}, tags={})
    tracker.log_metrics(run, {"kept": 1.0}, step=0)
    cap = _capped(db)
    try:
        with pytest.raises(StoreFullError) as err:
            for step in range(1, 50):
                tracker.log_metrics(run, {f"m{i}": float(i) for i in range(900)}, step=step)
    finally:
        event.remove(Engine, "connect", cap)
    line = str(err.value)
    assert "\n" not in line
    assert line == (
        f"the MLflow store sqlite:///{db} cannot be written (its file system is full): "
        "free space there; what it recorded is kept"
    )
    for engine in [o for o in gc.get_objects() if isinstance(o, Engine)]:
        engine.dispose()
    assert Tracker(f"sqlite:///{db}").client.get_run(run).data.metrics["kept"] == 1.0
