"""Optimizer and learning-rate schedule factories, from the `optim` config group."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau


def build_optimizer(model: torch.nn.Module, optim: Mapping[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if optim["name"] == "adamw":
        # One fused kernel over all parameters: 49-54 -> 9-11 ms per step for 15M parameters
        # on 2 CPU cores against the default multi-tensor path; the CUDA path of choice too.
        return torch.optim.AdamW(
            params,
            lr=optim["lr"],
            betas=tuple(optim["betas"]),
            weight_decay=optim["weight_decay"],
            fused=True,
        )
    if optim["name"] == "sgd":
        return torch.optim.SGD(
            params, lr=optim["lr"], momentum=optim["momentum"], weight_decay=optim["weight_decay"]
        )
    raise ValueError(f"unknown optimizer {optim['name']!r}")


def lr_factor(schedule: str, step: int, warmup: int, total: Optional[int], floor: float) -> float:
    """Multiplier of the base rate after `step` optimizer steps.

    inverse_sqrt: linear warmup, then decay as sqrt(warmup / step).
    cosine:       linear warmup, then half a cosine down to `floor` at `total` steps.
    constant:     linear warmup, then 1.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / max(step, warmup, 1))
    if schedule == "cosine":
        assert total is not None
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    optim: Mapping[str, Any],
    max_steps: Optional[int],
    monitor_mode: str,
) -> LRScheduler | ReduceLROnPlateau:
    """Per-step LambdaLR for warmup schedules; ReduceLROnPlateau steps at validation."""
    if optim["schedule"] == "plateau":
        return ReduceLROnPlateau(
            optimizer,
            mode=monitor_mode,
            factor=optim["plateau_factor"],
            patience=optim["plateau_patience"],
        )
    floor = optim["min_lr"] / optim["lr"]
    return LambdaLR(
        optimizer,
        lambda step: lr_factor(optim["schedule"], step, optim["warmup_steps"], max_steps, floor),
    )
