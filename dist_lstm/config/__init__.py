"""Typed configuration: dataclass schemas (schema.py) and value checks (validate.py)."""

from dist_lstm.config.schema import Config, register_configs
from dist_lstm.config.validate import validate_config

__all__ = ["Config", "register_configs", "validate_config"]
