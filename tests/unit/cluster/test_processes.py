"""Processes known by pid: their sockets, and stopping exactly them (real processes)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from asha_tune.cluster import processes
from tests.helpers.processes import is_loopback, listening

LISTENER = (
    "import socket, time; s = socket.socket({family}); s.bind(({host!r}, 0)); s.listen(); "
    "print(s.getsockname()[1], flush=True); time.sleep(60)"
)


def test_listening_reports_each_socket_with_its_address_and_process():
    children = {}
    for family, host in (("socket.AF_INET", "127.0.0.1"), ("socket.AF_INET6", "::1")):
        child = subprocess.Popen(
            [sys.executable, "-c", LISTENER.format(family=family, host=host)],
            stdout=subprocess.PIPE,
            text=True,
        )
        children[host] = (child, int(child.stdout.readline()))
    try:
        found = listening([c.pid for c, _ in children.values()])
        for host, (child, port) in children.items():
            assert (host, port, child.pid) in found
            assert is_loopback(host)
        assert not is_loopback("0.0.0.0")
        assert not is_loopback("192.0.2.2")
        assert listening([]) == []
    finally:
        for child, _ in children.values():
            child.kill()
            child.wait()


def test_stop_ends_the_leader_its_session_and_descendants_that_left_it_and_nothing_else(tmp_path):
    # The leader starts a child in its session and one that starts a session of its own (as
    # PostgreSQL's backends do); a bystander runs beside them.
    tree = (
        "import os, subprocess, sys, time; "
        "subprocess.Popen(['sleep', '60']); "
        "subprocess.Popen([sys.executable, '-c', 'import os, time; os.setsid(); time.sleep(60)']); "
        "time.sleep(60)"
    )
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    leader = processes.spawn([sys.executable, "-c", tree], tmp_path / "tree.log")
    try:
        deadline = time.time() + 30
        while time.time() < deadline and len(processes.family(leader)) < 3:
            time.sleep(0.1)
        family = processes.family(leader)
        assert len(family) == 3
        assert processes.alive(leader)
        assert processes.stop(leader, timeout=2) == 3  # only the leader gets SIGTERM: the rest is killed
        assert not any(processes.alive(p) for p in family)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_pid_with_another_start_time_is_not_ours():
    me = processes.identify(__import__("os").getpid())
    assert processes.alive(me)
    assert not processes.alive(processes.Proc(pid=me.pid, start_ticks=me.start_ticks + 1))
    assert processes.family(processes.Proc(pid=me.pid, start_ticks=me.start_ticks + 1)) == []
    assert not processes.alive(None)


def test_free_port_is_free_on_loopback():
    port = processes.free_port()
    assert not processes.port_open(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert processes.port_open(port)
