"""On a real two-node SLURM cluster (tests/helpers/slurm_cluster.py): the sbatch template
across both nodes, a preemption that requeues the job, a node lost mid-run, and Hydra's
SLURM launcher. Skipped, with the reason, where the cluster cannot start."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from dist_lstm.checkpoint import read_meta
from tests.helpers.configs import DISTRIBUTED_RUN
from tests.helpers.paths import ROOT
from tests.helpers.runs import assert_same_training, logged, wait_for_step
from tests.helpers.slurm_cluster import SlurmCluster, why_it_cannot_start
from tests.helpers.wandb_records import offline_runs

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SLURM runs on Linux")

JOB_ENV = {"GPUS_PER_NODE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
CPU_NODE = ["--gpus-per-node=0", "--cpus-per-task=1"]  # what the template's header says


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = why_it_cannot_start()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except RuntimeError as exc:
        cluster.stop()
        pytest.skip(str(exc))
    yield cluster
    cluster.stop()


def submit(slurm, tmp_path: Path, name: str, overrides, sbatch_args=(), wandb="disabled"):
    """`sbatch launch/slurm/train.sbatch` as the template's header tells a CPU cluster."""
    slurm.restart_lost_nodes()
    run_dir = tmp_path / name
    job = slurm.sbatch(
        [
            f"--chdir={ROOT}",
            f"--output={tmp_path}/{name}-%j.out",
            *CPU_NODE,
            *sbatch_args,
            "launch/slurm/train.sbatch",
            *overrides,
        ],
        env={**JOB_ENV, "RUN_DIR": str(run_dir), "WANDB_MODE": wandb},
        cwd=ROOT,
    )
    return job, run_dir


def rank_logs(run_dir: Path) -> List[Path]:
    return [run_dir / "train.log", run_dir / "train.rank1.log"]


def test_a_preempted_job_checkpoints_requeues_and_ends_as_an_unbroken_one(
    slurm,
    corpus,
    tmp_path,
):
    """Both jobs span the two nodes; `scancel --signal=USR1 --batch` is what the template's
    `--signal=B:USR1@120` delivers before a time limit or a preemption."""
    # long enough that no machine finishes it between step 8 and the signal
    training = [*corpus, *DISTRIBUTED_RUN, "trainer.max_steps=300", "trainer.val_every_steps=150"]
    whole, whole_dir = submit(slurm, tmp_path, "whole", training, wandb="offline")
    broken, broken_dir = submit(slurm, tmp_path, "broken", training, wandb="offline")
    wait_for_step(broken_dir, 8)
    slurm.scancel("--signal=USR1", "--batch", broken)
    for job, run_dir in ((whole, whole_dir), (broken, broken_dir)):
        slurm.wait_until_completed(job, timeout=400, logs=rank_logs(run_dir))
    assert slurm.job(broken)["Restarts"] == "1" and slurm.job(whole)["Restarts"] == "0"
    assert "DDPStrategy on cpu, world size 2" in logged(whole_dir / "train.log")

    # every rank checkpointed at the step it reached; the next attempt resumed there
    stopped = re.search(r"stopped by SIGTERM at step (\d+)", logged(broken_dir / "train.log"))
    assert stopped and "stopped by SIGTERM" in logged(broken_dir / "train.rank1.log")
    step = int(stopped.group(1))
    assert 8 <= step < 300
    out = logged(next(tmp_path.glob(f"broken-{broken}.out")))
    assert "attempt 1" in out and "attempt 2" in out  # the requeued attempt appended
    resumed = f"resumed from {broken_dir}/checkpoints/step_{step:08d}"
    assert resumed in logged(broken_dir / "train.log")
    # The same W&B run continued. (The first attempt's offline file is empty: SLURM's
    # signal also stops W&B's service, which drops what it had not written; README.)
    announced = re.findall(r"W&B run (\w+) \(offline\)", logged(broken_dir / "train.log"))
    assert len(announced) == 2 and len(set(announced)) == 1
    meta = read_meta(broken_dir / "checkpoints" / f"step_{step:08d}")
    assert meta["wandb_run_id"] == announced[0] == offline_runs(broken_dir)[-1]["id"]
    assert_same_training(broken_dir, whole_dir)


def test_a_node_lost_mid_run_ends_with_a_named_error_and_the_job_continues(
    slurm,
    corpus,
    tmp_path,
):
    """Everything of node n2 is killed (its slurmd, step daemon, torchrun and worker): the
    rank left says what happened at once, SLURM requeues the job (--requeue), and once
    the node is back the job continues from its newest complete checkpoint. n2 is not
    the first node, which hosts the rendezvous store (the template says so; the loss of
    that host is tests/integration/test_two_hosts.py's)."""
    training = [*corpus, *DISTRIBUTED_RUN, "trainer.max_steps=200", "trainer.val_every_steps=0"]
    job, run_dir = submit(slurm, tmp_path, "lost", [*training, "checkpoint.every_steps=20"])
    wait_for_step(run_dir, 30)
    lost_at = time.monotonic()
    for pid in slurm.processes(node="n2"):
        os.kill(pid, 9)
    logs = [run_dir / "train.log", run_dir / "train.rank1.log"]  # either rank may survive
    deadline = time.monotonic() + 60  # well inside the 600 s collective time-out
    while time.monotonic() < deadline and not any("lost contact" in logged(p) for p in logs):
        time.sleep(0.5)
    said = " ".join(logged(p) for p in logs)
    assert "lost contact with the rest of the job" in said, said[-3000:]
    assert "Traceback" not in said
    assert time.monotonic() - lost_at < 60
    complete = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    slurm.wait_for_job(job, ("PENDING",), timeout=120)  # requeued after n2's failure
    slurm.scontrol("hold", job)  # until n2 is back and has heard the lost attempt's end
    slurm.restart_lost_nodes()
    slurm.wait_until_messages_delivered()
    slurm.scontrol("release", job)
    slurm.wait_until_completed(job, timeout=300, logs=logs)
    resumed = re.search(r"resumed from \S+/(step_\d+)", logged(logs[0]))
    assert resumed and resumed.group(1) == complete[-1]  # the newest, intact
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 200


def test_hydra_slurm_launcher_runs_a_sweep_of_two_node_jobs(
    slurm,
    corpus,
    tmp_path,
):
    slurm.restart_lost_nodes()
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.nodes=2",
            "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.tasks_per_node=1",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1",
            "hydra.launcher.partition=debug",
            f"hydra.sweep.dir={sweep_dir}",
            *corpus,
            *DISTRIBUTED_RUN,
            "trainer.max_steps=4",
            "trainer.val_every_steps=4",
            "optim.lr=1e-3,3e-3",
        ],
        cwd=ROOT,
        env={**slurm.env, **JOB_ENV},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(sweep_dir / "sweep_summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["completed", "completed"]
    for job in ("0", "1"):
        assert "world size 2" in logged(sweep_dir / job / "train.log")
        assert (sweep_dir / job / "result.json").is_file()


def test_a_time_limit_warning_checkpoints_and_the_requeued_job_resumes_there(
    slurm,
    corpus,
    tmp_path,
):
    """The template's own path: `--signal=B:USR1@N` before `--time` runs out (SLURM's
    controller sends it; here N=30 of a 1-minute limit), checkpoint, requeue, resume."""
    training = [*corpus, *DISTRIBUTED_RUN, "trainer.max_steps=1000000", "trainer.val_every_steps=0"]
    job, run_dir = submit(
        slurm, tmp_path, "limited", training, sbatch_args=["--time=1", "--signal=B:USR1@30"]
    )
    deadline = time.monotonic() + 240
    while "resumed from" not in logged(run_dir / "train.log") and time.monotonic() < deadline:
        time.sleep(1)
    slurm.scancel(job)
    said = logged(run_dir / "train.log")
    stopped = re.search(r"stopped by SIGTERM at step (\d+)", said)
    assert stopped, said[-3000:]
    step = int(stopped.group(1))
    assert f"resumed from {run_dir}/checkpoints/step_{step:08d}" in said
    assert int(slurm.job(job)["Restarts"]) >= 1
