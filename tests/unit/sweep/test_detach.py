"""`asha-tune launch --detach`, `logs` and a detached driver in `status`, without Ray: the
submission ids, the entrypoint the job runs, the command that resubmits it, the refusals, and the
driver told by its job's state on a dashboard (a small HTTP server standing in for the head's job
API). The submission itself runs on the local cluster: tests/cluster/test_detach.py."""

from __future__ import annotations

import json
import shlex
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlflow.tracking import MlflowClient

from asha_tune.analysis.status import Driver, commands
from asha_tune.cli import build_parser, given_flags, main
from asha_tune.monitor import NotDetachedError, detached_driver, detached_of, status
from asha_tune.spaces.loading import find_space
from asha_tune.sweep.jobs import (
    DETACHED_ENV,
    Detached,
    detach_problems,
    detached_here,
    entrypoint,
    next_submission,
    resubmit_command,
    submission_id,
    submission_number,
)
from tests.helpers.mlflow import mlflow_store

CLUSTER = [
    "--address",
    "127.0.0.1:6379",
    "--tracking-uri",
    "http://127.0.0.1:5000",
    "--study-url",
    "postgresql://asha@127.0.0.1:5432/optuna?passfile=/c/secrets/pgpass",
    "--results-dir",
    "/shared/results",
]


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "spaces" / "mine.yaml"
    path.parent.mkdir()
    path.write_text(find_space("quickstart").read_text())  # a valid space, under another file name
    return path


def parsed(argv):
    args = build_parser().parse_args(argv)
    return args, given_flags(args.launch_parser, args)


# --- the submission id ---------------------------------------------------------------------------


def test_a_submission_id_names_its_sweep_and_counts_its_drivers():
    assert submission_id("rl", 1) == "asha-tune-rl-1"
    assert submission_number("rl", "asha-tune-rl-12") == 12
    # another sweep's (rl-2's first, rl's none), and jobs submitted by hand
    assert submission_number("rl", "asha-tune-rl-2-1") is None
    assert submission_number("rl", "raysubmit_abc") is None
    assert submission_number("rl-2", "asha-tune-rl-2-1") == 1
    assert next_submission("rl", []) == "asha-tune-rl-1"
    assert next_submission("rl", ["asha-tune-rl-1", "asha-tune-rl-2-7", "asha-tune-rl-3"]) == "asha-tune-rl-4"


# --- the entrypoint ------------------------------------------------------------------------------


def test_the_entrypoint_is_the_launch_command_with_if_exists_resume_and_without_detach(space_file):
    argv = ["launch", "--space", str(space_file), "--name", "rl", "--set", "train.epochs=3"]
    argv += ["--set", "search.num_trials=4", "--device", "cpu", "--data-root", "/data/PACS"]
    argv += [*CLUSTER, "--resource-wait", "30", "--detach", "--if-exists", "fail"]
    args, flags = parsed(argv)
    words = entrypoint(space_file.name, "rl", flags)
    assert words == [
        "asha-tune",
        "launch",
        "--space",
        "mine.yaml",  # the file shipped with the job, in its working folder
        "--name",
        "rl",
        "--set",
        "train.epochs=3",
        "--set",
        "search.num_trials=4",
        "--results-dir",
        "/shared/results",
        "--resource-wait",
        "30",
        "--data-root",
        "/data/PACS",
        "--tracking-uri",
        "http://127.0.0.1:5000",
        "--study-url",
        "postgresql://asha@127.0.0.1:5432/optuna?passfile=/c/secrets/pgpass",
        "--device",
        "cpu",
        "--if-exists",
        "resume",
    ]
    # The driver parses it as the same launch: every value but the four the entrypoint sets.
    again = build_parser().parse_args(words[1:])
    for key, value in vars(args).items():
        if key in ("space", "detach", "if_exists", "address", "launch_parser", "handler"):
            continue
        assert getattr(again, key) == value, key
    assert (again.detach, again.if_exists, again.address) == (False, "resume", None)


def test_the_resubmit_command_is_the_detached_launch_as_given(space_file):
    argv = ["launch", "--space", "mine", "--name", "rl", "--rehearse", *CLUSTER, "--detach"]
    _, flags = parsed(argv)
    words = resubmit_command("mine", "rl", flags, "127.0.0.1:6379")
    assert words[:6] == ["asha-tune", "launch", "--space", "mine", "--name", "rl"]
    assert words[-3:] == ["--address", "127.0.0.1:6379", "--detach"]
    assert "--rehearse" in words
    assert words[words.index("--rehearse") + 1] == "0.5"
    assert "--if-exists" not in words


# --- refusals ------------------------------------------------------------------------------------


def test_what_cannot_be_detached_is_refused_one_line_each(space_file):
    _, flags = parsed(["launch", "--space", str(space_file), "--restart", "--results-dir", "out"])
    problems = detach_problems(None, flags, None)
    assert len(problems) == 6, problems
    text = "\n".join(problems)
    for said in (
        "--detach needs a Ray cluster",
        "--detach needs --name",
        "--detach and --restart",
        "--detach needs --tracking-uri",
        "--detach needs --study-url",
        "--results-dir out: --detach needs an absolute path",
    ):
        assert said in text
    _, flags = parsed(["launch", "--space", "x", *CLUSTER[2:], "--tracking-uri", "sqlite:///mlflow.db"])
    assert detach_problems("rl", flags, "h:1") == [
        "--tracking-uri sqlite:///mlflow.db: a relative path; --detach needs the store as the cluster's "
        "driver reaches it (a server URL, or an absolute path)"
    ]
    _, flags = parsed(["launch", "--space", "x", *CLUSTER[2:], "--tracking-uri", "sqlite:////abs/m.db"])
    assert detach_problems("rl", flags, "h:1") == []


@pytest.mark.parametrize(
    ("extra", "code", "said"),
    [
        ([], 2, "--detach needs a Ray cluster: give its address"),
        (["--address", "127.0.0.1:1"], 1, "cannot reach the Ray cluster at 127.0.0.1:1"),
    ],
)
def test_launch_detach_refusals_are_one_line_and_submit_nothing(
    space_file, capsys, monkeypatch, extra, code, said
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = ["launch", "--space", str(space_file), "--name", "rl", *CLUSTER[2:], *extra, "--detach"]
    assert main(argv) == code
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("\n") == 1, out.err
    assert out.err.startswith("asha-tune launch: error: ")
    assert said in out.err


# --- the detached driver, in the records and in status -------------------------------------------


def test_a_detached_driver_knows_itself_from_its_jobs_environment(monkeypatch):
    record = Detached("asha-tune-rl-1", "http://127.0.0.1:8265", "asha-tune launch --detach")
    monkeypatch.setenv(DETACHED_ENV, record.to_env())
    assert detached_here() == record
    monkeypatch.setenv(DETACHED_ENV, "not json")
    assert detached_here() is None
    assert Detached.from_record({"submission_id": "x"}) is None


class JobAPI(BaseHTTPRequestHandler):
    """The head's job API, as far as `status` reads it: /api/jobs/, the jobs and their states."""

    jobs: dict[str, str] = {}
    code = 200

    def do_GET(self):  # http.server's name
        code = self.code if self.path == "/api/jobs/" else 404
        listed = [{"submission_id": i, "status": s} for i, s in self.jobs.items()]
        body = json.dumps(listed).encode() if code == 200 else b"no"
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def dashboard():
    server = ThreadingHTTPServer(("127.0.0.1", 0), JobAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    JobAPI.jobs, JobAPI.code = {}, 200
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


COMMAND = "asha-tune launch --space mine --name s --address 127.0.0.1:6379 --detach"


def detached_sweep(tmp_path, dashboard, status_="running"):
    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    detached = {"submission_id": "asha-tune-s-1", "dashboard": dashboard, "command": COMMAND}
    driver = {"host": "head-node", "pid": 7, "ray_job": "02000000", "detached": detached}
    tags = {"asha_tune.sweep": "s", "asha_tune.status": status_, "asha_tune.driver": json.dumps(driver)}
    client.create_run(client.create_experiment("x"), tags=tags)
    return uri


def test_status_shows_a_detached_driver_as_its_ray_job(tmp_path, dashboard, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    uri = detached_sweep(tmp_path, dashboard)
    JobAPI.jobs = {"asha-tune-s-1": "RUNNING"}
    lines = status("s", uri, tmp_path).lines
    assert lines[0] == "sweep s: running"
    assert lines[1] == "  driver: Ray job asha-tune-s-1: RUNNING"
    assert (
        lines[-1]
        == f"  next: asha-tune status s --tracking-uri {uri} · asha-tune stop s --tracking-uri {uri}"
    )


@pytest.mark.parametrize("ended", ["FAILED", "STOPPED", None])
def test_a_lost_detached_driver_is_said_with_the_command_that_resubmits_it(tmp_path, dashboard, ended):
    uri = detached_sweep(tmp_path, dashboard)
    JobAPI.jobs = {"asha-tune-s-1": ended} if ended else {}
    found = status("s", uri, tmp_path)
    assert found.lines[0] == "sweep s: recorded as running, but its driver is gone"
    job = ended or "unknown to the cluster (a new head?)"
    assert found.lines[1] == f"  driver: Ray job asha-tune-s-1: {job}; driver lost: resubmit with {COMMAND}"
    assert found.lines[-1] == f"  next: {COMMAND}"
    assert found.record["driver"]["alive"] is False
    assert found.record["commands"] == [COMMAND]


def test_a_driver_resubmitted_since_the_records_were_written_is_the_one_status_shows(tmp_path, dashboard):
    uri = detached_sweep(tmp_path, dashboard)  # the records name asha-tune-s-1
    JobAPI.jobs = {"asha-tune-s-1": "FAILED", "asha-tune-s-2": "PENDING", "asha-tune-s-2-1": "FAILED"}
    lines = status("s", uri, tmp_path).lines
    assert lines[:2] == ["sweep s: running", "  driver: Ray job asha-tune-s-2: PENDING"]


def test_an_interrupted_detached_sweep_offers_the_resubmit_command(tmp_path, dashboard):
    uri = detached_sweep(tmp_path, dashboard, "interrupted")
    JobAPI.jobs = {"asha-tune-s-1": "FAILED"}
    lines = status("s", uri, tmp_path).lines
    assert lines[:2] == ["sweep s: interrupted", "  driver: Ray job asha-tune-s-1: FAILED"]
    assert lines[-1] == f"  next: {COMMAND}"


def test_a_dashboard_that_refuses_the_token_or_is_gone_leaves_the_driver_unknown(
    tmp_path, dashboard, monkeypatch
):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "wrong")
    record = Detached("asha-tune-s-1", dashboard, COMMAND)
    JobAPI.code = 403
    driver = detached_driver(record, running=True)
    assert driver.alive is None
    assert "refused this machine's Ray token (from $RAY_AUTH_TOKEN)" in driver.text
    gone = detached_driver(Detached("asha-tune-s-1", "http://127.0.0.1:1", COMMAND), running=True)
    assert gone.alive is None
    assert "cannot reach the Ray dashboard at http://127.0.0.1:1" in gone.text


def test_commands_of_a_detached_sweep_resubmit_instead_of_resume():
    class State:
        name, status, rehearsal, tags = "s", "interrupted", False, {}

    lost = Driver(False, "Ray job x: FAILED", certain=True, resubmit=COMMAND)
    assert commands(State(), lost, "", "") == [COMMAND]  # type: ignore[arg-type]
    assert commands(State(), None, "", "") == ["asha-tune resume s"]  # type: ignore[arg-type]


# --- logs ----------------------------------------------------------------------------------------


def test_logs_finds_the_detached_job_in_the_records(tmp_path, dashboard):
    uri = detached_sweep(tmp_path, dashboard)
    assert detached_of("s", uri, tmp_path) == Detached("asha-tune-s-1", dashboard, COMMAND)


def test_logs_of_a_sweep_not_detached_or_unknown_is_one_line(tmp_path, capsys):
    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    driver = {"host": "laptop", "pid": 42, "ray_job": "01000000"}
    tags = {"asha_tune.sweep": "s", "asha_tune.status": "running", "asha_tune.driver": json.dumps(driver)}
    client.create_run(client.create_experiment("x"), tags=tags)
    with pytest.raises(NotDetachedError) as err:
        detached_of("s", uri, tmp_path)
    assert str(err.value) == (
        f"sweep s was not launched with --detach: its driver (pid 42 on laptop) printed to the terminal "
        f"that ran it; asha-tune status s --tracking-uri {uri} tells where it stands"
    )
    unknown = "no sweep named nope"
    hint = "asha-tune logs nope --address HOST:PORT reads its job on that Ray cluster"
    for name, said in (("s", ["was not launched with --detach"]), ("nope", [unknown, hint])):
        assert main(["logs", name, "--tracking-uri", uri, "--results-dir", str(tmp_path)]) != 0
        err_text = capsys.readouterr().err
        assert err_text.count("\n") == 1, err_text
        assert all(part in err_text for part in said), err_text
    assert shlex.split(COMMAND)[-1] == "--detach"


def test_logs_on_a_cluster_that_does_not_answer_is_one_line(capsys):
    """`logs --address`, by the head's HOST:PORT or the dashboard's URL (the check `--detach`
    makes before it submits): nothing listens there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed
    for address, said in (
        (f"127.0.0.1:{port}", f"cannot reach the Ray cluster at 127.0.0.1:{port}"),
        (f"http://127.0.0.1:{port}", f"cannot reach the Ray dashboard at http://127.0.0.1:{port}"),
    ):
        assert main(["logs", "s", "--address", address]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith("asha-tune logs: error: ")
        assert said in err
