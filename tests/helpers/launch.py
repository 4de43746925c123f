"""Starting training as users do, in a child process: a command run to its end, and
torchrun's command line for two local ranks."""

from __future__ import annotations

import os
import subprocess
import sys

from dist_lstm.topology import free_local_port
from tests.helpers.paths import ROOT


def run(args, timeout=300, status=0, **env):
    """Run a command to its end and check its exit status; `env` adds variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == status, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def torchrun(*overrides, nproc=2):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{free_local_port()}",
        "train.py",
        *overrides,
    ]
