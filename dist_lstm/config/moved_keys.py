"""Config keys renamed in the past: an override still setting one stops with the error
that names the new key. The schema has no field for them, so without this check Hydra
would only say that the key does not exist."""

from __future__ import annotations

from typing import Iterable

from dist_lstm.errors import ConfigError
from dist_lstm.extras import command_line_overrides

# old key -> the key of the group that uses it now
MOVED_KEYS = {
    "trainer.precision": "strategy.precision",
    "optim.clip_grad_norm": "strategy.clip_grad_norm",
}


def refuse_moved_keys(overrides: Iterable[str]) -> None:
    """Raise ConfigError naming the new key if `overrides` (key=value strings, as on a
    train.py command line) set a moved one; run before Hydra composes them."""
    for old, value in command_line_overrides(overrides).items():
        new = MOVED_KEYS.get(old)
        if new is not None:
            raise ConfigError(
                f"{old} has moved to {new} (the group that uses it): set {new}={value} "
                f"instead of {old}={value}."
            )
