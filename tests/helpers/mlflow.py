"""MLflow for tests: new stores in an instant, and the pages tests look at."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote


def compare_runs_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's run comparison page (parallel coordinates, scatter) for these runs."""
    return (
        f"{base}/#/compare-runs?runs={quote(json.dumps(run_ids))}"
        f"&experiments={quote(json.dumps([experiment_id]))}&workflowType=machine_learning"
    )


@functools.cache
def _template() -> Path:
    """An empty MLflow sqlite store, made once per test process (MLflow's migrations take seconds)."""
    from asha_tune.tracking import Tracker

    folder = Path(tempfile.mkdtemp(prefix="asha-tune-mlflow-template-"))
    Tracker(f"sqlite:///{folder / 'mlflow.db'}").client.search_experiments()
    return folder / "mlflow.db"


def mlflow_store(path: Path) -> str:
    """The URI of a new, empty MLflow store at `path` (a copy of the template: instant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), path)
    return f"sqlite:///{path}"
