"""When to write a checkpoint besides validations and the end of training: every N steps
(`checkpoint.every_steps`) and every N minutes (`checkpoint.every_minutes`)."""

from __future__ import annotations

import time
from typing import Optional


class SavePolicy:
    """The clock is rank 0's: ranks agree through the trainer's per-step vote, since their
    clocks would cross the interval at different steps."""

    def __init__(self, every_steps: Optional[int] = None, every_minutes: Optional[float] = None):
        self.every_steps = every_steps
        self.every_seconds = 60.0 * every_minutes if every_minutes else None
        self._last_save = time.monotonic()

    def due_at_step(self, step: int) -> bool:
        return bool(self.every_steps) and step % self.every_steps == 0

    def due_by_clock(self) -> bool:
        return (
            self.every_seconds is not None
            and time.monotonic() - self._last_save >= self.every_seconds
        )

    def saved(self) -> None:
        """A checkpoint was just written: the interval starts again."""
        self._last_save = time.monotonic()
