"""Every random number generator a training step draws from, as checkpointable state.

Dropout draws from torch's global generator (and CUDA's on GPUs); Python's and NumPy's
are included for any library code that uses them. The state is kept per rank, in a file
per rank: ranks hold different states, and one shared key would silently keep only one.
NumPy's state is stored as plain tensors and numbers so the file loads with
`weights_only=True`.
"""

from __future__ import annotations

import random
from typing import Any, Dict

import numpy as np
import torch


def capture() -> Dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this process's GPU only: a resume may see fewer GPUs (one per rank)
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["kind"],
            saved["keys"].numpy().astype(np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        if isinstance(saved, (list, tuple)):  # older checkpoints: every visible GPU
            device = torch.cuda.current_device()
            if device >= len(saved):
                return
            saved = saved[device]
        torch.cuda.set_rng_state(saved)


def reseed(seed: int, step: int, rank: int) -> None:
    """For a rank the checkpoint has no state for (it was written by fewer ranks)."""
    value = (seed * 1_000_003 + step) * 1_009 + rank
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


class RNGState:
    """This process's generators as a per-rank checkpoint part (see CheckpointManager)."""

    def __init__(self, seed: int, rank: int):
        self.seed = seed
        self.rank = rank

    def state_dict(self) -> Dict[str, Any]:
        return capture()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        restore(state)

    def start_fresh(self, step: int) -> None:
        """A fresh but reproducible stream for a rank the checkpoint did not have."""
        reseed(self.seed, step, self.rank)
