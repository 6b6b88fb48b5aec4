"""sweep/ray_compat.py, pinned to the Ray it was checked against: each private name and rule it
relies on, checked against the installed Ray itself (a local Ray started for it). On a Ray
upgrade, this test says what to look at again (then move CHECKED_RAY)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import ray

from asha_tune.sweep import ray_compat


def test_the_checked_ray_is_the_installed_one():
    assert ".".join(ray.__version__.split(".")[:2]) == ray_compat.CHECKED_RAY


@pytest.mark.parametrize(
    "env", [{"RAY_TMPDIR": "/tmp/a"}, {"TMPDIR": "/tmp/b"}, {"RAY_TMPDIR": "/tmp/a", "TMPDIR": "/tmp/b"}, {}]
)
def test_the_address_file_is_where_ray_start_writes_it(env, monkeypatch):
    import ray._common.utils

    for name in ("RAY_TMPDIR", "TMPDIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ray_compat.ray_address_file() == Path(ray._common.utils.get_ray_address_file(None))


def test_the_names_it_reads_are_rays():
    import ray._private.ray_constants
    import ray._raylet
    from ray.autoscaler._private.util import format_readonly_node_type

    assert ray_compat.V1_STATUS_KEY == ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS
    assert ray_compat.V2_ENABLED_KEY == ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY
    assert format_readonly_node_type("f46b") == "node_f46b"  # how _v1_report tells the mirror
    # The driver's Ray core reads its GCS reconnect timeout from RAY_<name>: the name is in it.
    core = Path(ray._raylet.__file__).read_bytes()
    assert ray_compat.GCS_RECONNECT_ENV.removeprefix("RAY_").encode() in core


def test_a_local_ray_has_no_autoscaler_and_knows_its_live_driver(process_tag):
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        gcs = ray.get_runtime_context().gcs_address
        deadline = time.monotonic() + 60
        while _internal_kv_get(ray_compat.V1_STATUS_KEY) is None:  # the monitor's first report
            assert time.monotonic() < deadline, "the monitor wrote no report"
            time.sleep(1)
        assert ray_compat.autoscaler_report(gcs) is None  # a read-only mirror: it adds nothing
        assert ray.get_runtime_context().get_job_id() in ray_compat.live_driver_jobs()
    finally:
        ray.shutdown()
