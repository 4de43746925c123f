"""Config groups as run.train hands them to the code below it: the schema's dataclasses
(OmegaConf.to_object), not the DictConfig Hydra composed."""

from __future__ import annotations

from typing import Sequence

from omegaconf import OmegaConf

from dist_lstm.config.compose import compose_config
from dist_lstm.config.schema import StrategyConfig


def strategy_config(overrides: Sequence[str] = ()) -> StrategyConfig:
    """The `strategy` group of conf/ composed with `overrides`, as its option's schema
    (DDPStrategyConfig under strategy=ddp, ...)."""
    return OmegaConf.to_object(compose_config(overrides).strategy)
