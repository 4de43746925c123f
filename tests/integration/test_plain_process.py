"""`python train.py strategy=ddp|deepspeed` started as one plain process (no torchrun):
a world of 1 on a loopback rendezvous, as when resuming a ZeRO checkpoint on one machine."""

import os
import subprocess
import sys

import pytest

from tests.helpers.configs import SHORT_SMOKE_RUN
from tests.helpers.paths import ROOT

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize(
    "strategy,name",
    [
        (["strategy=ddp"], "DDPStrategy"),
        (["strategy=deepspeed", "strategy.zero_stage=1"], "DeepSpeedStrategy"),
    ],
)
def test_distributed_strategy_runs_in_a_plain_process(tmp_path, strategy, name):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    # What a start killed while DeepSpeed JIT-built its CPU shared-memory op leaves: a lock
    # with no owner, on which every later build of that op waits forever.
    stale_lock = tmp_path / "torch_extensions" / "deepspeed_shm_comm" / "lock"
    stale_lock.parent.mkdir(parents=True)
    stale_lock.touch()
    env["TORCH_EXTENSIONS_DIR"] = str(stale_lock.parent.parent)
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            *SHORT_SMOKE_RUN,
            *strategy,
            "logger.wandb.mode=disabled",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,  # a start waiting on the stale lock never ends
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last" / "COMPLETE").is_file()
    assert [p.name for p in stale_lock.parent.iterdir()] == ["lock"]  # nothing was built
    assert f"{name} on cpu, world size 1" in (tmp_path / "train.log").read_text()
