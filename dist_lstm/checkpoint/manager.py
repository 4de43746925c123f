"""Single-file model checkpoints (`last.pt`, `best.pt`, `step_*.pt`) in a run's
checkpoints/ folder.

Files are written to a temporary name and renamed, so a crash mid-write never replaces a
good checkpoint with a truncated one. Each file carries the resolved config and the
serialized tokenizer, so one file is enough to rebuild the model for inference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch

from dist_lstm.errors import UserError

FORMAT_VERSION = 1
STEP_PREFIX = "step_"


class CheckpointManager:
    """Owns the checkpoint folder of one run: names, atomic writes and retention.

    `best.pt` and `last.pt` are named checkpoints; `step_XXXXXXXX.pt` are written at each
    validation and only the newest `keep_last` are kept (for averaging).
    """

    def __init__(self, run_dir: str | Path, keep_last: int = 0):
        self.directory = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.pt"

    def save(self, name: str, model_state: Dict[str, torch.Tensor], **meta: Any) -> Path:
        """Atomically write `name`.pt with the model weights and `meta` (step, config...)."""
        payload = {"format_version": FORMAT_VERSION, "model": model_state, **meta}
        return write_atomically(payload, self.path(name))

    def save_step(self, model_state: Dict[str, torch.Tensor], step: int, **meta: Any) -> None:
        """Write step_<step>.pt and delete step checkpoints beyond the newest keep_last."""
        if self.keep_last <= 0:
            return
        self.save(f"{STEP_PREFIX}{step:08d}", model_state, step=step, **meta)
        for old in sorted(self.directory.glob(f"{STEP_PREFIX}*.pt"))[: -self.keep_last]:
            old.unlink()


def write_atomically(payload: Dict[str, Any], target: str | Path) -> Path:
    """torch.save to a temporary name, then rename: readers never see half a file."""
    target = Path(target).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(target.name + ".tmp")
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


def load_model_weights(
    model: torch.nn.Module, state: Dict[str, torch.Tensor], source: Path
) -> None:
    """load_state_dict, but a mismatch names the parameters and both shapes."""
    expected = model.state_dict()
    problems = [
        f"{name}: checkpoint {tuple(state[name].shape)} vs model {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    problems += [f"{name}: missing from the checkpoint" for name in expected if name not in state]
    problems += [f"{name}: not a parameter of this model" for name in state if name not in expected]
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise UserError(
            f"{source}: the weights do not match the model built from its config ({shown}). "
            "The checkpoint's config or weights were changed; use the files as training wrote them."
        )
    model.load_state_dict(state)
