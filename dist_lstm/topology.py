"""Where this process sits: rank, world size and device.

The one place that decides the device. Single-process runs are rank 0 of a world of 1;
launcher environments (torchrun, SLURM) are read here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` picks this process's GPU when CUDA is present, else the CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device='cuda' is invalid: CUDA is not available on this machine; "
            "use trainer.device=cpu or auto."
        )
    if preference in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def single_process(device_preference: str) -> Topology:
    return Topology(rank=0, world_size=1, local_rank=0, device=resolve_device(device_preference))
