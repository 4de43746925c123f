"""Distributed concerns behind one interface (base.py); `build_strategy` picks one.

STRATEGIES holds one entry per option of the `strategy` config group: its schema, whose
`name` default is the option's name (conf/strategy/NAME.yaml starts from NAME_schema),
and the function that builds it. Config validation and schema selection read the same
schema classes from config/schema.py STRATEGY_SCHEMAS, which stands below this package;
`registry` fails at import when the two lists part ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Type

from dist_lstm.config.choices import registry
from dist_lstm.config.schema import (
    STRATEGY_SCHEMAS,
    AutoStrategyConfig,
    DDPStrategyConfig,
    DeepSpeedStrategyConfig,
    SingleStrategyConfig,
    StrategyConfig,
)
from dist_lstm.errors import ConfigError
from dist_lstm.extras import require
from dist_lstm.strategy.base import Strategy
from dist_lstm.strategy.ddp import DDPStrategy
from dist_lstm.strategy.single import SingleDeviceStrategy
from dist_lstm.topology import Topology

__all__ = [
    "STRATEGIES",
    "StrategyEntry",
    "Strategy",
    "SingleDeviceStrategy",
    "DDPStrategy",
    "build_strategy",
]


def _single(cfg: StrategyConfig, topology: Topology) -> Strategy:
    if topology.distributed:
        raise ConfigError(
            f"strategy.name='single' is invalid under a launcher with WORLD_SIZE="
            f"{topology.world_size}: use strategy=ddp (or auto), or start one process."
        )
    return SingleDeviceStrategy(topology, cfg)


def _ddp(cfg: DDPStrategyConfig, topology: Topology) -> Strategy:
    return DDPStrategy(topology, cfg)


def _auto(cfg: AutoStrategyConfig, topology: Topology) -> Strategy:
    """DDP under a launcher that started several processes, one process otherwise."""
    return (_ddp if topology.distributed else _single)(cfg, topology)


def _deepspeed(cfg: DeepSpeedStrategyConfig, topology: Topology) -> Strategy:
    require("deepspeed", "strategy=deepspeed")  # an extra; found without importing it
    from dist_lstm.strategy.deepspeed import DeepSpeedStrategy  # imports deepspeed: slow

    return DeepSpeedStrategy(topology, cfg)


@dataclass(frozen=True)
class StrategyEntry:
    """One option of the `strategy` group: its schema and how this process builds it."""

    schema: Type[StrategyConfig]
    build: Callable[..., Strategy]  # (the schema's config, Topology) -> Strategy

    @property
    def name(self) -> str:
        """strategy.name: the schema's own default, so the name is written once."""
        return self.schema.name


_ENTRIES = (
    StrategyEntry(AutoStrategyConfig, _auto),
    StrategyEntry(SingleStrategyConfig, _single),
    StrategyEntry(DDPStrategyConfig, _ddp),
    StrategyEntry(DeepSpeedStrategyConfig, _deepspeed),
)
# strategy.name -> entry, for each schema config/schema.py offers.
STRATEGIES: Dict[str, StrategyEntry] = registry(
    "strategy.name", tuple(STRATEGY_SCHEMAS), {entry.name: entry for entry in _ENTRIES}
)


def build_strategy(cfg: StrategyConfig, topology: Topology) -> Strategy:
    """The strategy the `strategy` config group asks for, set up for this process (its
    precision is checked for the device by the base class, before any collective)."""
    entry = STRATEGIES.get(cfg.name)
    if entry is None:
        raise ConfigError(f"strategy.name={cfg.name!r} is invalid: use {', '.join(STRATEGIES)}.")
    return entry.build(cfg, topology)
