"""Single-file model checkpoints (`last.pt`, `best.pt`) in a run's checkpoints/ folder.

Files are written to a temporary name and renamed, so a crash mid-write never replaces a
good checkpoint with a truncated one. Each file carries the resolved config, which makes a
run directory (checkpoints/ + tokenizer/) enough to rebuild the model for inference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch

from dist_lstm.errors import UserError

FORMAT_VERSION = 1


class CheckpointManager:
    """Owns the checkpoint folder of one run and how its files are named and committed."""

    def __init__(self, run_dir: str | Path):
        self.directory = Path(run_dir) / "checkpoints"

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.pt"

    def save(self, name: str, model_state: Dict[str, torch.Tensor], **meta: Any) -> Path:
        """Atomically write `name`.pt holding the model weights and `meta` (step, config...)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(name)
        scratch = target.with_suffix(".pt.tmp")
        payload = {"format_version": FORMAT_VERSION, "model": model_state, **meta}
        torch.save(payload, scratch)
        os.replace(scratch, target)
        return target


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    """Read a checkpoint written by CheckpointManager.save, with a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise UserError(
            f"{path} is not a dist-lstm checkpoint ({exc.__class__.__name__})."
        ) from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise UserError(f"{path} is not a dist-lstm checkpoint (no model weights inside).")
    return payload
