"""A real two-node SLURM cluster on this machine, for the tests that submit jobs to it.

Debian's slurmctld and two slurmd daemons (`-N n1`, `-N n2`, one port each) run from a
temporary folder with their own munge daemon, key, state and logs, so nothing outside
that folder is read or changed except the two node names, which must resolve (`.ci/run`
adds `127.0.0.1 n1 n2` to /etc/hosts). Where something is missing the tests skip and say
what. A requeued job waits `CRED_EXPIRE + 1` seconds before it runs again (SLURM's
default is 120).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

NODES = ("n1", "n2")
CRED_EXPIRE = 10  # seconds; the requeue delay follows it
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")


def why_it_cannot_start() -> Optional[str]:
    """The reason this machine cannot run the test cluster, or None."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        return (
            f"SLURM test cluster: {', '.join(missing)} not installed "
            "(apt-get install slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        return "SLURM test cluster: its daemons must run as root here"
    for node in NODES:
        try:
            socket.gethostbyname(node)
        except OSError:
            return (
                f"SLURM test cluster: node name {node} does not resolve "
                "(add '127.0.0.1 n1 n2' to /etc/hosts)"
            )
    return None


def free_ports(count: int) -> List[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class SlurmCluster:
    """Start with `start()`, submit with `sbatch()`, always `stop()`."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 60.0) -> None:
        for folder in ("state", "log", *(f"spool/{n}" for n in NODES)):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._run(
            "munged",
            "--force",
            f"--socket={self.root / 'munge.sock'}",
            f"--key-file={key}",
            f"--log-file={self.root / 'log/munged.log'}",
            f"--pid-file={self.root / 'munged.pid'}",
            f"--seed-file={self.root / 'munged.seed'}",
        )
        self.conf.write_text(self._config())
        self._run("slurmctld", "-f", str(self.conf), "-i")
        for node in NODES:
            self.start_node(node)
        self.wait_for_idle_nodes(timeout)

    def start_node(self, node: str) -> None:
        self._run("slurmd", "-f", str(self.conf), "-N", node)

    def restart_lost_nodes(self, timeout: float = 60.0) -> None:
        """Start again the slurmd of any node a test killed and did not bring back, so one
        failed test does not leave the next one waiting for a node that never comes."""
        lost = [node for node in NODES if not self.processes("slurmd", node=node)]
        for node in lost:
            self.start_node(node)
        deadline = time.monotonic() + timeout
        while lost and time.monotonic() < deadline:
            states = self.node_states()
            if all(not states.get(node, "down").startswith("down") for node in lost):
                return
            time.sleep(0.5)

    def wait_until_messages_delivered(self, timeout: float = 120.0) -> None:
        """Wait until the controller has no message left to deliver (`sdiag`: agent queue
        empty, no pending RPC), e.g. the end of a lost attempt, queued for its node while
        the node was down. With SLURM's default cred_expire (120 s) a requeued job starts
        long after that; this cluster's short one would let the message reach the next
        attempt of the same job id and end it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = subprocess.run(["sdiag"], env=self.env, capture_output=True, text=True).stdout
            if _nothing_pending(report):
                return
            time.sleep(0.5)
        raise AssertionError(f"SLURM controller still has messages to deliver: {report}")

    def stop(self) -> None:
        """Every process of the cluster ends: daemons, job steps and their tasks (all of
        them carry this cluster's SLURM_CONF in their environment), then munged."""
        subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True)
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True)
        for pid in self.processes():
            _kill(pid)
        _kill(_pid_in(self.root / "munged.pid"))

    def processes(self, name: str = "", node: Optional[str] = None) -> List[int]:
        """Pids of this cluster's processes (their environment holds its SLURM_CONF) whose
        command contains `name`, on `node` when given (SLURMD_NODENAME, or slurmd -N)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"SLURM_CONF={self.conf}".encode() not in environ or name not in command:
                continue
            on_node = f"SLURMD_NODENAME={node}".encode() in environ or f"-N {node}" in command
            if node is None or on_node:
                found.append(int(entry.name))
        if node is not None:  # the step daemons whose tasks run there belong to the node
            found += [p for p in map(_parent, found) if p and "slurmstepd" in _command(p)]
        return sorted(set(found))

    def wait_for_idle_nodes(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.node_states()
            if len(states) == len(NODES) and all(s.startswith("idle") for s in states.values()):
                return
            time.sleep(0.5)
        raise RuntimeError(f"SLURM test cluster: nodes not idle after {timeout} s: {states}")

    # ------------------------------------------------------------------ jobs
    def sbatch(self, args: Sequence[str], env: Optional[Dict[str, str]] = None, cwd=None) -> str:
        proc = subprocess.run(
            ["sbatch", "--parsable", *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> Dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.scontrol("show", "job", "-o", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_for_job(self, job_id: str, states: Sequence[str], timeout: float) -> Dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(1)
        raise AssertionError(f"job {job_id} not {'/'.join(states)} after {timeout} s: {info}")

    def wait_until_completed(self, job_id: str, timeout: float, logs: Sequence[Path] = ()) -> None:
        """Wait for the job to end; unless it COMPLETED, fail with what explains why: its
        state and exit code, the tail of its output file, the controller's lines on it and
        the tails of `logs` (the run's own logs)."""
        info = self.wait_for_job(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout)
        if info["JobState"] != "COMPLETED":
            raise AssertionError(self.failure_report(job_id, info, logs))

    def failure_report(self, job_id: str, info: Dict[str, str], logs: Sequence[Path]) -> str:
        controller = _text(self.root / "log/slurmctld.log").splitlines()
        mentions = [line for line in controller if re.search(rf"\b(JobId=|job ){job_id}\b", line)]
        parts = [
            f"job {job_id} {info.get('JobState')} (exit {info.get('ExitCode')}, "
            f"reason {info.get('Reason')}, restarts {info.get('Restarts')})",
            "--- controller:\n" + "\n".join(mentions[-30:]),
            f"--- {info.get('StdOut')}:\n" + _text(Path(info.get("StdOut", "")))[-4000:],
        ]
        parts += [f"--- {log}:\n" + _text(log)[-3000:] for log in logs]
        return "\n".join(parts)

    def node_states(self) -> Dict[str, str]:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env, capture_output=True, text=True
        ).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def scontrol(self, *args: str) -> str:
        return subprocess.run(
            ["scontrol", *args], env=self.env, capture_output=True, text=True, check=True
        ).stdout

    def scancel(self, *args: str) -> None:
        subprocess.run(["scancel", *args], env=self.env, capture_output=True, check=True)

    # ------------------------------------------------------------------ internals
    def _config(self) -> str:
        ctld, *node_ports = free_ports(1 + len(NODES))
        host = socket.gethostname()
        nodes = "\n".join(
            f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs=2 "
            "RealMemory=8000"
            for node, port in zip(NODES, node_ports)
        )
        return f"""\
ClusterName=distlstmtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.root / "munge.sock"},cred_expire={CRED_EXPIRE}
CredType=cred/munge
StateSaveLocation={self.root / "state"}
SlurmdSpoolDir={self.root / "spool"}/%n
SlurmctldPidFile={self.root / "slurmctld.pid"}
SlurmdPidFile={self.root}/slurmd-%n.pid
SlurmctldLogFile={self.root / "log/slurmctld.log"}
SlurmdLogFile={self.root}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=10
InactiveLimit=0
KillWait=10
MinJobAge=600
{nodes}
PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""

    def _run(self, *command: str) -> None:
        proc = subprocess.run(command, env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"SLURM test cluster: {' '.join(command)} failed: {proc.stderr.strip()}"
            )


def _parent(pid: int) -> Optional[int]:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _command(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _nothing_pending(sdiag_report: str) -> bool:
    queue = re.search(r"Agent queue size:\s+(\d+)", sdiag_report)
    pending = sdiag_report.partition("Pending RPC statistics")[2]
    return bool(queue) and queue.group(1) == "0" and "count:" not in pending


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _pid_in(pid_file: Path) -> Optional[int]:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _kill(pid: Optional[int]) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
