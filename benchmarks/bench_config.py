"""The run configuration a benchmark measures, composed from conf/ exactly as train.py
composes it (benchmarks must not import tests/, which has its own helper)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """conf/config.yaml with `overrides`."""
    from hydra import compose, initialize_config_dir

    from dist_lstm.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
