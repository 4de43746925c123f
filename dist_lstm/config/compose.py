"""Compose the run's config from conf/ outside `python train.py` (for `dist-lstm prepare`
and the tests): the same files and overrides, the same typed schema."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from dist_lstm.config.moved_keys import refuse_moved_keys
from dist_lstm.config.schema import register_configs
from dist_lstm.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """conf/config.yaml with `overrides`, as `python train.py OVERRIDES` sees it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not (CONF_DIR / "config.yaml").is_file():
        raise ConfigError(
            f"no conf/ beside the package ({CONF_DIR}): run from a checkout of the repository "
            "installed with `pip install -e .`."
        )
    refuse_moved_keys(overrides)
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(str(exc).strip()) from None
