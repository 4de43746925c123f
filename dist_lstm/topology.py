"""Where this process sits: rank, world size, local rank and device.

The one place that reads the launcher's environment. torchrun, the DeepSpeed launcher and
`srun` + torchrun (see launch/) all export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; a plain `python train.py` has none of them and is rank 0 of a world of 1.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import List, Mapping, Optional

import torch

from dist_lstm.errors import ConfigError


@dataclass(frozen=True)
class Topology:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launcher_rank(env: Optional[Mapping[str, str]] = None) -> int:
    """This process's global rank as the launcher set it (0 when not launched)."""
    return int((env if env is not None else os.environ).get("RANK", "0"))


def launcher_world_size(env: Optional[Mapping[str, str]] = None) -> int:
    return int((env if env is not None else os.environ).get("WORLD_SIZE", "1"))


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


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` picks this process's GPU (cuda:LOCAL_RANK) when CUDA is present, else the CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device='cuda' is invalid: CUDA is not available on this machine; "
            "use trainer.device=cpu or auto."
        )
    if preference in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def from_environment(device_preference: str, env: Optional[Mapping[str, str]] = None) -> Topology:
    """Read rank facts from the launcher's environment variables."""
    env = env if env is not None else os.environ
    rank, world_size = launcher_rank(env), launcher_world_size(env)
    local_rank = int(env.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world_size}: check the launcher.")
    if world_size > 1 and not ("MASTER_ADDR" in env and "MASTER_PORT" in env):
        raise ConfigError(
            f"WORLD_SIZE={world_size} but MASTER_ADDR/MASTER_PORT are not set: launch with "
            "torchrun or the deepspeed launcher (see launch/README.md)."
        )
    return Topology(rank, world_size, local_rank, resolve_device(device_preference, local_rank))


def free_local_port() -> int:
    """A TCP port free on this machine now, for a rendezvous of local processes
    (torchrun launched by tests and benchmarks, jobs started on one node)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
