"""Distributed concerns behind one interface (base.py); `build_strategy` picks one."""

from __future__ import annotations

from omegaconf import DictConfig

from dist_lstm.errors import ConfigError
from dist_lstm.extras import require
from dist_lstm.precision import check_precision, limit_onednn_caches
from dist_lstm.strategy.base import Strategy
from dist_lstm.strategy.ddp import DDPStrategy
from dist_lstm.strategy.single import SingleDeviceStrategy
from dist_lstm.topology import Topology

__all__ = ["Strategy", "SingleDeviceStrategy", "DDPStrategy", "build_strategy"]


def build_strategy(
    strategy: DictConfig,
    topology: Topology,
    clip_grad_norm: float,
    precision: str = "32",
) -> Strategy:
    """The strategy `strategy.name` asks for, set up for this process's topology."""
    limit_onednn_caches(precision, topology.device)
    check_precision(precision, topology.device)
    name = strategy.name
    if name == "auto":
        name = "ddp" if topology.distributed else "single"
    if name == "single":
        if topology.distributed:
            raise ConfigError(
                f"strategy.name='single' is invalid under a launcher with WORLD_SIZE="
                f"{topology.world_size}: use strategy=ddp (or auto), or start one process."
            )
        return SingleDeviceStrategy(topology, clip_grad_norm, precision)
    if name == "ddp":
        return DDPStrategy(
            topology,
            clip_grad_norm,
            precision,
            backend=strategy.backend,
            timeout_s=strategy.timeout_s,
            find_unused_parameters=strategy.find_unused_parameters,
        )
    if name == "deepspeed":
        require("deepspeed", "strategy=deepspeed")  # an extra; found without importing it
        from dist_lstm.strategy.deepspeed import DeepSpeedStrategy  # imports deepspeed: slow

        return DeepSpeedStrategy(
            topology,
            clip_grad_norm,
            zero_stage=strategy.zero_stage,
            precision=precision,
            backend=strategy.backend,
            timeout_s=strategy.timeout_s,
        )
    raise ConfigError(f"strategy.name={name!r} is invalid: use auto, single, ddp or deepspeed.")
