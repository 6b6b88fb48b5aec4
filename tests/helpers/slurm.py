"""A real SLURM on this machine, for tests: munged, slurmctld and one slurmd per node, all
Debian's programs (`apt-get install slurmctld slurmd slurm-client munge`), in a folder of
their own, with a config and a munge key of their own, on free ports.

Each SLURM node gets an address of its own in 127.0.0.0/8 (node 1 is 127.0.1.1, node 2
127.0.1.2, ...): traffic stays on loopback, yet every node has its own IP as on a real cluster,
and Ray, which swaps 127.0.0.1 for the machine's network address when nodes join a head, takes
these addresses as they are. Several slurmd run on one host with `slurmd -N NAME`, each on its
own port.

`stop()` cancels the jobs, then ends exactly the processes it started, by pid (each daemon runs
in the foreground as a session leader), and whatever carries its tag (the jobs' steps, which
slurmstepd starts outside the daemons' sessions).

    with SlurmCluster(tmp_path / "slurm", nodes=2, cpus=2) as slurm:
        job = slurm.sbatch(script, args, env)
        state = slurm.wait_job(job, timeout=600)
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from asha_tune.cluster import processes
from asha_tune.cluster.processes import Proc
from tests.helpers.processes import PROCESS_TAG_ENV, kill_tagged, wait_for

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


def missing_programs() -> list[str]:
    """The SLURM and munge programs this machine lacks (the tests skip, naming them)."""
    return [p for p in PROGRAMS if not (shutil.which(p) or Path("/usr/sbin", p).is_file())]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin") / name)


def node_address(index: int) -> str:
    """Node i's own loopback address (127.0.1.i)."""
    return f"127.0.1.{index}"


class SlurmCluster:
    """One SLURM controller and `nodes` compute nodes on this machine."""

    def __init__(self, directory: Path, nodes: int = 2, cpus: int = 2, memory_mb: int = 4000):
        self.directory = directory
        self.nodes = [f"n{i}" for i in range(1, nodes + 1)]
        self.cpus, self.memory_mb = cpus, memory_mb
        self.tag = uuid.uuid4().hex
        self.procs: dict[str, Proc] = {}
        self.env: dict[str, str] = {}
        self.started_s: float | None = None

    # --- configuration ---------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.directory / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.directory / "munge" / "munge.socket"

    def _write_config(self) -> None:
        d = self.directory
        for sub in ("munge", "state", "log", *(f"spool/{n}" for n in self.nodes)):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # munged insists on a key only its user reads and a socket folder others can traverse.
        key_dir = d / "munge-key"
        key_dir.mkdir(mode=0o700, exist_ok=True)
        key = key_dir / "munge.key"
        if not key.is_file():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(1024))
        for folder in (d, d / "munge"):
            folder.chmod(0o755)
        free = processes.free_port
        user = getpass.getuser()
        host = socket.gethostname()
        lines = [
            "ClusterName=asha-test",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={free()}",
            f"SlurmdPort={free()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool' / '%n'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'log' / 'slurmd-%n.log'}",
            # No cgroups in a container: track processes by parentage, bind nothing.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",  # the nodes are what this file says
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SwitchType=switch/none",
            "KillWait=5",
        ]
        for i, name in enumerate(self.nodes, start=1):
            lines.append(
                f"NodeName={name} NodeAddr={node_address(i)} NodeHostname={host} Port={free()} "
                f"CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN"
            )
        lines.append(f"PartitionName=test Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    # --- start and stop --------------------------------------------------------------

    def _spawn(self, name: str, command: list[str]) -> None:
        env = {**os.environ, PROCESS_TAG_ENV: self.tag, "SLURM_CONF": str(self.conf)}
        self.procs[name] = processes.spawn(command, self.directory / "log" / f"{name}.out", env=env)

    def start(self, timeout: float = 60) -> SlurmCluster:
        started = time.monotonic()
        self._write_config()
        d = self.directory
        self._spawn(
            "munged",
            [
                _program("munged"),
                "--foreground",
                f"--key-file={d / 'munge-key' / 'munge.key'}",
                f"--socket={self.munge_socket}",
                f"--pid-file={d / 'munge' / 'munged.pid'}",
                f"--seed-file={d / 'munge-key' / 'munged.seed'}",
                f"--log-file={d / 'log' / 'munged.log'}",
            ],
        )
        wait_for(self.munge_socket.exists, timeout, "munged's socket", poll=0.1)
        self._spawn("slurmctld", [_program("slurmctld"), "-D", "-f", str(self.conf)])
        for name in self.nodes:
            self._spawn(f"slurmd-{name}", [_program("slurmd"), "-D", "-f", str(self.conf), "-N", name])
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            PROCESS_TAG_ENV: self.tag,  # the jobs' processes carry it: stop() finds them
        }
        wait_for(self._all_idle, timeout, f"SLURM nodes {self.nodes} to be idle", poll=0.3)
        self.started_s = time.monotonic() - started
        return self

    def _all_idle(self) -> bool:
        for name, proc in self.procs.items():
            if not processes.alive(proc):
                log = self.directory / "log" / f"{name}.out"
                raise AssertionError(f"{name} exited: {log.read_text()[-1500:]}")
        done = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        states = dict(line.split() for line in done.stdout.splitlines() if line.strip())
        return sorted(states) == sorted(self.nodes) and all(s == "idle" for s in states.values())

    def stop(self) -> None:
        """Cancel every job, then end the daemons and the jobs' processes, by pid."""
        if "slurmctld" in self.procs and processes.alive(self.procs["slurmctld"]):
            self.run("scancel", "--full", "--user", getpass.getuser(), check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.jobs():
                time.sleep(0.5)
        for name in [n for n in self.procs if n.startswith("slurmd-")] + ["slurmctld", "munged"]:
            if name in self.procs:
                processes.stop(self.procs[name], signal.SIGTERM, timeout=15)
        kill_tagged(self.tag)

    def __enter__(self) -> SlurmCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- using it --------------------------------------------------------------------

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [_program(command[0]), *command[1:]],
            env=self.env or {**os.environ, "SLURM_CONF": str(self.conf)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")
        return done

    def jobs(self) -> list[str]:
        done = self.run("squeue", "-h", "-o", "%i", check=False)
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]

    def sbatch(
        self, script: Path, args: list[str], env: dict[str, str], cwd: Path, options: list[str] = ()
    ) -> str:
        """Submit `script` with `args`, in `env` (plus SLURM's and the kit's tag); its job id.
        `options` (sbatch's own) override the script's #SBATCH lines."""
        done = subprocess.run(
            [_program("sbatch"), "--parsable", *options, str(script), *args],
            env={**env, "SLURM_CONF": str(self.conf), PROCESS_TAG_ENV: self.tag},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"sbatch {script}: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def job_state(self, job: str) -> str:
        done = self.run("scontrol", "show", "job", job, "-o", check=False)
        found = re.search(r"JobState=(\S+)", done.stdout)
        return found.group(1) if found else "UNKNOWN"

    def wait_job(self, job: str, timeout: float) -> str:
        """The job's final state (COMPLETED, FAILED, ...) once it has one."""
        return wait_for(
            lambda: state if (state := self.job_state(job)) in FINAL_STATES else None,
            timeout,
            f"SLURM job {job} to end",
            poll=1,
        )
