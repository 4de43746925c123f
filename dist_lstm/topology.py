"""Where this process sits: rank, world size, local rank and device.

The one place that reads the launcher's environment. torchrun, the DeepSpeed launcher,
`srun` + torchrun (see launch/) and `launcher.nproc_per_node` all export RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. A task that SLURM's `srun` (or Hydra's submitit
launcher) starts directly, one process per task, has SLURM's variables instead; they are
translated (`scheduler_environment`). A plain `python train.py` has none of them and is
rank 0 of a world of 1; if its strategy needs a process group (DDP, DeepSpeed), the group
meets on this machine (`loopback_rendezvous`). torchrun's restart count and store
placement are read here too, so no other module looks at these variables.
"""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional

import torch

from dist_lstm.errors import ConfigError
from dist_lstm.extras import require

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Topology:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    # Where the process group meets (MASTER_ADDR, MASTER_PORT); None when not launched.
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    # torchrun only: how often it restarted the workers (TORCHELASTIC_RESTART_COUNT), and
    # whether its agent hosts the rendezvous store (TORCHELASTIC_USE_AGENT_STORE).
    restart_attempt: Optional[int] = None
    agent_hosts_store: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _scheduler_job() -> Optional[Any]:
    """submitit's view of the scheduler task this process is, or None: a SLURM job step
    started by srun, or a task of submitit's local executor."""
    env = os.environ
    local = env.get("SUBMITIT_EXECUTOR") == "local" and "SUBMITIT_LOCAL_GLOBALID" in env
    # SLURM_STEP_ID tells an srun task from the batch script itself, which sees the job's
    # task count too but is a single process.
    srun = {"SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID"} <= env.keys()
    if not (local or srun):
        return None
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        # Without submitit every task would train alone as rank 0, all in one directory.
        require("slurm", "a job of several srun tasks without torchrun", module="submitit")
    try:
        from submitit.local.local import LocalJobEnvironment
        from submitit.slurm.slurm import SlurmJobEnvironment
    except ImportError:  # the `slurm` extra; a single task needs none of it
        return None
    return LocalJobEnvironment() if local else SlurmJobEnvironment()


def scheduler_environment() -> Dict[str, str]:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT of a task that a scheduler
    started without torchrun (one process per task); empty when RANK is already set or the
    job has a single task.

    submitit's job environments parse SLURM's compressed node lists; the first node hosts
    the rendezvous, on a port drawn from the job id, so every task agrees without talking.
    MASTER_ADDR / MASTER_PORT already in the environment win.
    """
    if "RANK" in os.environ:
        return {}
    job = _scheduler_job()
    if job is None or job.num_tasks <= 1:
        return {}
    local = job.cluster == "local"
    port = random.Random(job.job_id).randint(20000, 60000)
    return {
        "RANK": str(job.global_rank),
        "WORLD_SIZE": str(job.num_tasks),
        "LOCAL_RANK": str(job.local_rank),
        "MASTER_ADDR": os.environ.get("MASTER_ADDR")
        or ("127.0.0.1" if local else job.hostnames[0]),
        "MASTER_PORT": os.environ.get("MASTER_PORT") or str(port),
    }


def launcher_environment() -> Mapping[str, str]:
    """The environment with the ranks a scheduler implies filled in."""
    implied = scheduler_environment()
    return {**os.environ, **implied} if implied else os.environ


def launcher_rank(env: Optional[Mapping[str, str]] = None) -> int:
    """This process's global rank as the launcher set it (0 when not launched)."""
    return int((env if env is not None else launcher_environment()).get("RANK", "0"))


def launcher_world_size(env: Optional[Mapping[str, str]] = None) -> int:
    return int((env if env is not None else launcher_environment()).get("WORLD_SIZE", "1"))


def drop_local_rank_argument(argv: List[str]) -> List[str]:
    """Remove `--local_rank=N` (or `--local_rank N`), which the DeepSpeed launcher appends
    to the command line; LOCAL_RANK in the environment says the same, and Hydra would
    reject the flag."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--local_rank":
            skip = True
        elif not arg.startswith("--local_rank="):
            out.append(arg)
    return out


def resolve_device(
    preference: str, local_rank: int = 0, option: str = "trainer.device="
) -> torch.device:
    """`auto` picks this process's GPU (cuda:LOCAL_RANK) when CUDA is present, else the CPU;
    one GPU per process, so more local ranks than GPUs are refused. `option`: how the
    setting is written where it was given (`--device ` on the dist-lstm command line)."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{option}cuda is invalid: CUDA is not available on this machine; "
            f"use {option}cpu or {option}auto."
        )
    if preference in ("cuda", "auto") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:  # two ranks on one GPU: NCCL fails at its first collective
            raise ConfigError(
                f"LOCAL_RANK={local_rank} but this machine has {gpus} GPU(s): run at most "
                f"{gpus} process(es) per node (torchrun --nproc_per_node={gpus}), or train on "
                f"the CPU with {option}cpu."
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def from_environment(device_preference: str, env: Optional[Mapping[str, str]] = None) -> Topology:
    """Read rank facts from the launcher's environment variables. Ranks implied by a
    scheduler are exported first: the process group (env://) and DeepSpeed read them."""
    if env is None:
        os.environ.update(scheduler_environment())
        env = os.environ
    rank, world_size = launcher_rank(env), launcher_world_size(env)
    local_rank = int(env.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world_size}: check the launcher.")
    if world_size > 1 and not ("MASTER_ADDR" in env and "MASTER_PORT" in env):
        raise ConfigError(
            f"WORLD_SIZE={world_size} but MASTER_ADDR/MASTER_PORT are not set: launch with "
            "torchrun or the deepspeed launcher (see launch/README.md)."
        )
    # Not launched (no WORLD_SIZE): a MASTER_ADDR left in the shell names no job's master.
    has_master = "WORLD_SIZE" in env and "MASTER_ADDR" in env and "MASTER_PORT" in env
    attempt = env.get("TORCHELASTIC_RESTART_COUNT")
    return Topology(
        rank,
        world_size,
        local_rank,
        resolve_device(device_preference, local_rank),
        master_addr=env["MASTER_ADDR"] if has_master else None,
        master_port=_port(env["MASTER_PORT"]) if has_master else None,
        restart_attempt=int(attempt) if attempt is not None else None,
        agent_hosts_store=env.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
    )


def _port(value: str) -> int:
    """MASTER_PORT as a number; a typo there should not end in int()'s traceback."""
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(
            f"MASTER_PORT={value!r} is not a TCP port: set it to a free port (1-65535)."
        )
    return int(value)


def loopback_rendezvous(topology: Topology) -> Topology:
    """The topology a process group is formed from. A process no launcher started (a
    plain `python train.py strategy=ddp|deepspeed`, e.g. to resume a ZeRO checkpoint on
    one machine) becomes rank 0 of a world of 1 meeting on 127.0.0.1 at a free port, as
    DeepSpeed's and Lightning's launch helpers do; launched processes are left as they are.

    LOCAL_RANK is exported when unset because DeepSpeed's engine requires it in the
    environment even when the process group already exists (it reads nothing else there).
    """
    if topology.master_addr is not None:
        return topology
    os.environ.setdefault("LOCAL_RANK", str(topology.local_rank))
    return replace(topology, master_addr=LOOPBACK, master_port=free_local_port())


def free_local_port() -> int:
    """A TCP port free on this machine now, for a rendezvous of local processes
    (torchrun launched by tests and benchmarks, jobs started on one node)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def job_identity(env: Optional[Mapping[str, str]] = None) -> str:
    """A name that every process and every restart of one job shares, and no other job:
    a requeued SLURM job keeps its id, torchrun's restarts their rendezvous id (given
    with --rdzv_id; `launcher.nproc_per_node` draws one per job), and other launched
    workers their launcher's process; a plain process is its own job."""
    env = os.environ if env is None else env
    host = socket.gethostname()
    if env.get("SLURM_JOB_ID"):
        return f"slurm job {env['SLURM_JOB_ID']}"
    run_id = env.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return f"torchrun run {run_id}"
    if "WORLD_SIZE" in env:
        return f"launcher process {os.getppid()} on {host}"
    return f"process {os.getpid()} on {host}"
