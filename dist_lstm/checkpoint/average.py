"""Checkpoint averaging: the element-wise mean of several checkpoints' parameters.

Averaging the last few checkpoints of a run usually gives a small, free BLEU gain
(a standard step in NMT toolkits). All inputs must come from the same model config and
tokenizer; the result is a normal checkpoint that translate and evaluate accept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from dist_lstm.checkpoint.consolidate import load_checkpoint
from dist_lstm.checkpoint.manager import checkpoints_dir, completed_checkpoints
from dist_lstm.errors import UserError


def last_step_checkpoints(run_dir: str | Path, count: int) -> List[Path]:
    """The `count` newest complete checkpoints of a run, oldest first."""
    run_dir = Path(run_dir).expanduser()
    found = completed_checkpoints(run_dir)
    if len(found) < count:
        raise UserError(
            f"{checkpoints_dir(run_dir)} has {len(found)} checkpoints, {count} were asked for. "
            "Lower --last, or train with a larger checkpoint.keep_last."
        )
    return found[-count:]


def average_checkpoints(paths: Sequence[str | Path]) -> Dict[str, Any]:
    """Mean of the model weights; the other fields come from the last checkpoint."""
    if len(paths) < 1:
        raise UserError("give at least one checkpoint to average.")
    payloads = [load_checkpoint(p) for p in paths]
    first, reference = payloads[0], Path(paths[0])
    for path, payload in zip(paths[1:], payloads[1:]):
        if payload.get("config", {}).get("model") != first.get("config", {}).get("model"):
            raise UserError(
                f"{path} has another model config than {reference}: only "
                "checkpoints of the same model can be averaged."
            )
        if payload.get("tokenizer") != first.get("tokenizer"):
            raise UserError(
                f"{path} has another tokenizer than {reference}: only "
                "checkpoints of the same run (or data) can be averaged."
            )
        if payload["model"].keys() != first["model"].keys() or any(
            payload["model"][k].shape != v.shape for k, v in first["model"].items()
        ):
            raise UserError(f"{path} and {reference} hold parameters of different shapes.")
    averaged = {}
    for name, tensor in first["model"].items():
        if not tensor.is_floating_point():
            averaged[name] = tensor.clone()
            continue
        total = torch.zeros_like(tensor, dtype=torch.float64)
        for payload in payloads:
            total += payload["model"][name].double()
        averaged[name] = (total / len(payloads)).to(tensor.dtype)
    result = {k: v for k, v in payloads[-1].items() if k not in ("metrics", "world_size")}
    result["model"] = averaged
    result["averaged_from"] = [str(p) for p in paths]
    return result
