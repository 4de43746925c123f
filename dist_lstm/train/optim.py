"""Optimizer and learning-rate schedule factories, from the `optim` config group (its
schema dataclass, OptimConfig)."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from dist_lstm.config.choices import OPTIMIZERS, registry
from dist_lstm.config.schema import OptimConfig


def _adamw(params, optim: OptimConfig) -> torch.optim.Optimizer:
    # One fused kernel over all parameters: a fifth of the default's step time on CPU
    # (benchmarks/RESULTS.md), and the CUDA path of choice too.
    return torch.optim.AdamW(
        params,
        lr=optim.lr,
        betas=tuple(optim.betas),
        weight_decay=optim.weight_decay,
        fused=True,
    )


def _sgd(params, optim: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )


# optim.name -> builder, for each name config/choices.py offers.
OPTIMIZER_BUILDERS: Dict[str, Callable[..., torch.optim.Optimizer]] = registry(
    "optim.name", OPTIMIZERS, {"adamw": _adamw, "sgd": _sgd}
)


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZER_BUILDERS[optim.name](params, optim)


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


class LRSchedule:
    """The learning-rate schedule as the training loop sees it: `after_step` once per
    optimizer step, `after_validation` with the monitored value. Warmup schedules move
    per step (LambdaLR); plateau moves at validations (ReduceLROnPlateau)."""

    def __init__(self, scheduler: LRScheduler | ReduceLROnPlateau):
        self.scheduler = scheduler
        self._per_validation = isinstance(scheduler, ReduceLROnPlateau)

    def after_step(self) -> None:
        if not self._per_validation:
            self.scheduler.step()

    def after_validation(self, value: float) -> None:
        if self._per_validation:
            self.scheduler.step(value)

    def state_dict(self) -> Dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def build_schedule(
    optimizer: torch.optim.Optimizer,
    optim: OptimConfig,
    max_steps: Optional[int],
    monitor_mode: str,
) -> LRSchedule:
    """monitor_mode: "max" or "min", the direction plateau watches the metric in."""
    if optim.schedule == "plateau":
        return LRSchedule(
            ReduceLROnPlateau(
                optimizer,
                mode=monitor_mode,
                factor=optim.plateau_factor,
                patience=optim.plateau_patience,
            )
        )
    floor = optim.min_lr / optim.lr
    return LRSchedule(
        LambdaLR(
            optimizer,
            lambda step: lr_factor(
                optim.schedule, step, optim.warmup_steps, max_steps, floor
            ),
        )
    )
