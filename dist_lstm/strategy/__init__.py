"""Distributed concerns behind one interface; see base.py."""

from dist_lstm.strategy.base import Strategy
from dist_lstm.strategy.single import SingleDeviceStrategy

__all__ = ["Strategy", "SingleDeviceStrategy"]
