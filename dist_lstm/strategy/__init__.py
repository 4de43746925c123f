"""Distributed concerns behind one interface (base.py); `build_strategy` picks one."""

from __future__ import annotations

from typing import Callable, Dict

from omegaconf import DictConfig

from dist_lstm.errors import ConfigError
from dist_lstm.extras import require
from dist_lstm.strategy.base import Strategy
from dist_lstm.strategy.comm_hooks import CommHook
from dist_lstm.strategy.ddp import DDPStrategy
from dist_lstm.strategy.single import SingleDeviceStrategy
from dist_lstm.topology import Topology

__all__ = ["STRATEGIES", "Strategy", "SingleDeviceStrategy", "DDPStrategy", "build_strategy"]


def _single(cfg: DictConfig, topology: Topology) -> Strategy:
    if topology.distributed:
        raise ConfigError(
            f"strategy.name='single' is invalid under a launcher with WORLD_SIZE="
            f"{topology.world_size}: use strategy=ddp (or auto), or start one process."
        )
    return SingleDeviceStrategy(topology, cfg.clip_grad_norm, cfg.precision)


def _ddp(cfg: DictConfig, topology: Topology) -> Strategy:
    return DDPStrategy(
        topology,
        cfg.clip_grad_norm,
        cfg.precision,
        backend=cfg.backend,
        timeout_s=cfg.timeout_s,
        find_unused_parameters=cfg.find_unused_parameters,
        comm_hook=CommHook(cfg.comm_hook, cfg.powersgd_rank, cfg.powersgd_start_step),
        bucket_cap_mb=cfg.bucket_cap_mb,
    )


def _deepspeed(cfg: DictConfig, topology: Topology) -> Strategy:
    require("deepspeed", "strategy=deepspeed")  # an extra; found without importing it
    from dist_lstm.strategy.deepspeed import DeepSpeedStrategy  # imports deepspeed: slow

    return DeepSpeedStrategy(
        topology,
        cfg.clip_grad_norm,
        zero_stage=cfg.zero_stage,
        precision=cfg.precision,
        backend=cfg.backend,
        timeout_s=cfg.timeout_s,
    )


# strategy.name -> builder (besides `auto`); config validation takes its choices from here.
STRATEGIES: Dict[str, Callable[[DictConfig, Topology], Strategy]] = {
    "single": _single,
    "ddp": _ddp,
    "deepspeed": _deepspeed,
}


def build_strategy(cfg: DictConfig, topology: Topology) -> Strategy:
    """The strategy the `strategy` config group asks for, set up for this process (its
    precision is checked for the device by the base class, before any collective)."""
    name = cfg.name
    if name == "auto":
        name = "ddp" if topology.distributed else "single"
    if name not in STRATEGIES:
        raise ConfigError(f"strategy.name={name!r} is invalid: use auto, {', '.join(STRATEGIES)}.")
    return STRATEGIES[name](cfg, topology)
