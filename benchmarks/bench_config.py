"""The run configuration a benchmark measures, composed from conf/ exactly as train.py
composes it (benchmarks must not import tests/, which has its own helper)."""

from dist_lstm.config.compose import compose_config

__all__ = ["compose_config"]
