"""torch.save as on a GPU, on a machine without one: every storage in the file is tagged
'cuda:0', exactly as torch.save tags tensors that live on the first GPU.

A plain torch.load of such a file on a CPU-only machine fails ("Attempting to deserialize
object on a CUDA device"), so loaders that must read GPU-trained checkpoints anywhere can
be tested for it here, on real files rather than by recording their arguments.
"""

from pathlib import Path
from typing import Any

import torch
import torch.serialization


def _tag_as_first_gpu(storage: Any) -> str:
    return "cuda:0"


def _leave_loading_to_torch(storage: Any, location: str) -> None:
    return None  # loading goes through torch's own CUDA deserializer


def save_as_on_a_gpu(obj: Any, path: Path) -> Path:
    """torch.save `obj` to `path` with every storage tagged 'cuda:0'; returns `path`."""
    # torch's tagger registry, first (lowest priority number) tagger wins; ours for this
    # save only, so no other test's files are tagged
    entry = (-1_000_000, _tag_as_first_gpu, _leave_loading_to_torch)
    torch.serialization.register_package(*entry)
    try:
        torch.save(obj, path)
    finally:
        torch.serialization._package_registry.remove(entry)
    return path
