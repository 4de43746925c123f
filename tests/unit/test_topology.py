"""The launcher's environment read in one place: torchrun's variables, SLURM's srun tasks and
submitit's local tasks."""

import os
import re
import sys
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from dist_lstm.errors import ConfigError
from dist_lstm.strategy.ddp import elastic_store
from dist_lstm.topology import (
    Topology,
    free_local_port,
    from_environment,
    launcher_rank,
    scheduler_environment,
)
from tests.helpers.paths import ROOT

SLURM_TASK = {
    "SLURM_JOB_ID": "81234",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS": "8",
    "SLURM_JOB_NUM_NODES": "4",
    "SLURM_JOB_NODELIST": "gpu[07-08,11],cpu3",
}


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables; whatever a test (or from_environment) sets is undone."""
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    for name in (*launcher, *SLURM_TASK, "SUBMITIT_EXECUTOR"):
        monkeypatch.setenv(name, "")  # recorded, so teardown restores the original state
        monkeypatch.delenv(name)
    return monkeypatch


def test_srun_task_gets_ranks_and_the_first_node_as_master(clean_env):
    for name, value in SLURM_TASK.items():
        clean_env.setenv(name, value)
    env = scheduler_environment()
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")} == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu07",
    }
    clean_env.setenv("SLURM_PROCID", "0")  # every task derives the same port from the job
    assert scheduler_environment()["MASTER_PORT"] == env["MASTER_PORT"]
    assert 20000 <= int(env["MASTER_PORT"]) <= 60000
    assert launcher_rank() == 0


def test_ranks_are_exported_for_the_process_group(clean_env):
    for name, value in {**SLURM_TASK, "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}.items():
        clean_env.setenv(name, value)
    clean_env.setenv("MASTER_PORT", "29999")  # one set by the user wins
    topology = from_environment("cpu")
    assert (topology.rank, topology.world_size, topology.local_rank) == (1, 2, 1)
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("gpu07", "29999")


@pytest.mark.parametrize(
    "change",
    [
        {"RANK": "3"},  # torchrun inside the allocation set the ranks
        {"SLURM_STEP_ID": None},  # the batch script itself: one process
        {"SLURM_NTASKS": "1"},
    ],
)
def test_scheduler_ranks_only_when_no_launcher_set_them(clean_env, change):
    for name, value in {**SLURM_TASK, **change}.items():
        if value is not None:
            clean_env.setenv(name, value)
    assert scheduler_environment() == {}


def test_submitit_local_tasks_meet_on_this_machine(clean_env):
    for name, value in {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": "777",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
        "SUBMITIT_LOCAL_NTASKS": "2",
    }.items():
        clean_env.setenv(name, value)
    env = scheduler_environment()
    assert (env["RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("1", "2", "127.0.0.1")


def test_torchrun_restart_count_and_store_host_are_read():
    torchrun = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_RESTART_COUNT": "2",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }
    topo = from_environment("cpu", env=torchrun)
    assert (topo.master_addr, topo.master_port) == ("node0", 29500)
    assert (topo.restart_attempt, topo.agent_hosts_store) == (2, True)
    plain = from_environment("cpu", env={})
    assert (plain.master_addr, plain.restart_attempt, plain.agent_hosts_store) == (
        None,
        None,
        False,
    )


def test_a_master_port_that_is_no_port_is_explained():
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "29x00"}
    with pytest.raises(ConfigError, match="MASTER_PORT='29x00' is not a TCP port"):
        from_environment("cpu", env=env)


def test_restarted_attempt_keeps_its_keys_under_its_own_prefix():
    """Under torchrun's shared agent store (the agent hosts it), the keys of restart 3
    live under attempt_3/; without a shared store rank 0 hosts a new one each round, as
    env:// does, and the restart counts of rejoined nodes differ: no prefix, no store."""
    port = free_local_port()
    agent = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=10))
    shared = Topology(
        0,
        1,
        0,
        torch.device("cpu"),
        "127.0.0.1",
        port,
        restart_attempt=3,
        agent_hosts_store=True,
    )
    elastic_store(shared, timeout_s=10).set("ready", "yes")
    assert agent.get("dist_lstm/attempt_3/ready") == b"yes"
    own = Topology(0, 1, 0, torch.device("cpu"), "127.0.0.1", port, restart_attempt=3)
    assert elastic_store(own, timeout_s=10) is None
    assert elastic_store(from_environment("cpu", env={}), timeout_s=10) is None


def test_only_topology_reads_the_launcher_variables():
    """Every other module takes these facts from a Topology (one place to get them right)."""
    launcher_read = re.compile(
        r"(environ|getenv)\W[^\n]*\b(RANK|WORLD_SIZE|LOCAL_RANK|MASTER_ADDR|MASTER_PORT"
        r"|TORCHELASTIC_\w+)\b"
    )
    package = ROOT / "dist_lstm"
    offenders = [
        str(path.relative_to(ROOT))
        for path in package.rglob("*.py")
        if path != package / "topology.py" and launcher_read.search(path.read_text())
    ]
    assert offenders == []


def test_srun_tasks_without_submitit_are_refused_not_run_alone(clean_env):
    """Without the `slurm` extra every srun task would train alone as rank 0."""
    for name, value in SLURM_TASK.items():
        clean_env.setenv(name, value)
    clean_env.setitem(sys.modules, "submitit", None)
    with pytest.raises(ConfigError, match=r'srun tasks .* needs submitit.*"\.\[slurm\]"'):
        from_environment("cpu")
    clean_env.setenv("SLURM_NTASKS", "1")  # one task is a plain process
    assert from_environment("cpu").world_size == 1


# ------------------------------------------------------------------ GPUs, read on CPU
def pretend_gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_each_local_rank_gets_its_own_gpu(monkeypatch):
    from dist_lstm.topology import resolve_device

    pretend_gpus(monkeypatch, 2)
    assert resolve_device("auto", 1) == torch.device("cuda", 1)


def test_more_local_ranks_than_gpus_are_refused_naming_the_fix(monkeypatch):
    from dist_lstm.topology import resolve_device

    pretend_gpus(monkeypatch, 1)
    with pytest.raises(ConfigError, match="LOCAL_RANK=1 but this machine has 1 GPU") as info:
        resolve_device("auto", 1)
    assert "--nproc_per_node=1" in str(info.value) and "trainer.device=cpu" in str(info.value)
    assert resolve_device("cpu", 1) == torch.device("cpu")  # the fix it names works


@pytest.mark.parametrize(
    "backend, device, expected",
    [
        ("nccl", torch.device("cuda", 1), torch.device("cuda", 1)),
        ("gloo", torch.device("cpu"), None),
    ],
)
def test_nccl_process_groups_are_bound_to_the_ranks_gpu(monkeypatch, backend, device, expected):
    from dist_lstm.strategy import ddp
    from dist_lstm.topology import Topology

    seen = {}
    monkeypatch.setattr(ddp.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(ddp.dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(ddp, "elastic_store", lambda topology, timeout: None)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: seen.update(set_device=device))
    topology = Topology(1, 2, 1, device, master_addr="127.0.0.1", master_port=29500)
    ddp.init_process_group(topology, backend, 60)
    assert seen["device_id"] == expected and seen["backend"] == backend
