"""Two hosts on one machine: two network namespaces joined by a veth pair whose both ends
are shaped with tc's token bucket filter (tbf), each running its own torchrun agent.

The namespaces, link and addresses are the test's own (10.<a>.<b>.1 and .2, names with
this process's id) and are removed afterwards. Files are shared, as on a cluster with a
shared file system; the network is not: each host has its own loopback and interface.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

RDZV_PORT = 29400


def why_they_cannot_start() -> Optional[str]:
    if not sys.platform.startswith("linux"):
        return "two-host tests: network namespaces are Linux's"
    if os.geteuid() != 0:
        return "two-host tests: creating network namespaces needs root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "two-host tests: ip and tc not installed (Debian's iproute2)"
    return None


class TwoHosts:
    def __init__(self, rate: str = "1gbit"):
        tag = os.getpid() % 100000
        self.names = [f"dlh{tag}a", f"dlh{tag}b"]  # namespace = interface name (<= 15)
        subnet = f"10.{200 + tag % 50}.{tag % 250}"
        self.addresses = [f"{subnet}.1", f"{subnet}.2"]
        self.rate = rate

    # ------------------------------------------------------------------ the link
    def create(self) -> None:
        a, b = self.names
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        for name, address in zip(self.names, self.addresses):
            _ip("link", "set", name, "netns", name)
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", name)
            _ip("-n", name, "link", "set", name, "up")
            _ip("-n", name, "link", "set", "lo", "up")
            _run(
                [
                    "ip",
                    "netns",
                    "exec",
                    name,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    name,
                    "root",
                    "tbf",
                    "rate",
                    self.rate,
                    "burst",
                    "1mb",
                    "latency",
                    "100ms",
                ]
            )

    def destroy(self) -> None:
        for index in range(2):
            self.kill_host(index)
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def kill_host(self, index: int) -> None:
        """Everything running in host `index` ends at once, as when a node dies."""
        pids = subprocess.run(
            ["ip", "netns", "pids", self.names[index]], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ------------------------------------------------------------------ agents
    def agent(
        self,
        index: int,
        run_id: str,
        args: Sequence[str],
        cwd: Path,
        log: Path,
        max_restarts: int = 2,
    ) -> subprocess.Popen:
        """torchrun on host `index` (host 0 serves the rendezvous), one worker."""
        name, address = self.names[index], self.addresses[index]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(cwd),
            "GLOO_SOCKET_IFNAME": name,
            # A node that rejoins needs a new bootstrap store every round (launch/README.md)
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        }
        command: List[str] = [
            "ip",
            "netns",
            "exec",
            name,
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=1",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={self.addresses[0]}:{RDZV_PORT}",
            f"--rdzv_id={run_id}",
            f"--rdzv_conf=is_host={'true' if index == 0 else 'false'}",
            f"--local_addr={address}",
            f"--max-restarts={max_restarts}",
            *args,
        ]
        with open(log, "a") as out:
            return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=out)


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _run(command: List[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"two-host tests: {' '.join(command)} failed: {proc.stderr.strip()}")
