"""MLflow's pages, for tests that look at them."""

from __future__ import annotations

import json
from urllib.parse import quote


def compare_runs_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's run comparison page (parallel coordinates, scatter) for these runs."""
    return (
        f"{base}/#/compare-runs?runs={quote(json.dumps(run_ids))}"
        f"&experiments={quote(json.dumps([experiment_id]))}&workflowType=machine_learning"
    )
