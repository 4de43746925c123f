"""One set of full model weights out of any checkpoint: a sharded training checkpoint
folder (DCP or DeepSpeed ZeRO) or a single exported file.

Inference, averaging and export all go through `load_checkpoint`, so none of them cares
how many ranks wrote the checkpoint or with which strategy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from dist_lstm.checkpoint.manager import STATE, read_meta, with_current_model_keys
from dist_lstm.errors import UserError
from dist_lstm.extras import require
from dist_lstm.strategy.formats import DCP_METADATA, DEEPSPEED_TAG, MODEL_KEY


def is_checkpoint_folder(path: Path) -> bool:
    return path.is_dir() and (path / STATE).is_dir()


def model_weights(folder: Path) -> Dict[str, torch.Tensor]:
    """Full fp32 model weights of a checkpoint folder, on CPU, in canonical keys."""
    state = folder / STATE
    if (state / DCP_METADATA).is_file():
        return _dcp_model_weights(state)
    if (state / DEEPSPEED_TAG).is_dir():
        return _deepspeed_model_weights(state)
    raise UserError(f"{state} holds neither DCP nor DeepSpeed files; the checkpoint is damaged.")


def _dcp_model_weights(state: Path) -> Dict[str, torch.Tensor]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    prefix = MODEL_KEY + "."
    metadata = dcp.FileSystemReader(str(state)).read_metadata().state_dict_metadata
    template = {
        key[len(prefix) :]: torch.empty(tuple(entry.size), dtype=entry.properties.dtype)
        for key, entry in metadata.items()
        if key.startswith(prefix) and isinstance(entry, TensorStorageMetadata)
    }
    wrapped = {MODEL_KEY: template}
    dcp.load(wrapped, checkpoint_id=str(state), no_dist=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in wrapped[MODEL_KEY].items()}


def _deepspeed_model_weights(state: Path) -> Dict[str, torch.Tensor]:
    tag_dir = state / DEEPSPEED_TAG
    if any(tag_dir.glob("*optim_states.pt")):
        require("deepspeed", f"reading the DeepSpeed ZeRO checkpoint {state.parent}")
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        weights = get_fp32_state_dict_from_zero_checkpoint(str(state), tag=DEEPSPEED_TAG)
    else:  # ZeRO stage 0: the model file holds the full weights
        module = torch.load(
            tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
        )
        weights = module["module"]
    return {k: v.detach().float().cpu().contiguous() for k, v in weights.items()}


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    """{"model": weights, "config", "tokenizer", "step", ...} from a checkpoint folder or
    an exported/averaged file, with a clear error for anything else."""
    path = Path(path).expanduser()
    if is_checkpoint_folder(path):
        meta = read_meta(path)
        return {**meta, MODEL_KEY: model_weights(path)}
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise UserError(
            f"{path} is not a dist-lstm checkpoint ({exc.__class__.__name__})."
        ) from None
    if not isinstance(payload, dict) or MODEL_KEY not in payload:
        raise UserError(f"{path} is not a dist-lstm checkpoint (no model weights inside).")
    return with_current_model_keys(payload)
