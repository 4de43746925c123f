"""The console progress bar: step, loss, learning rate, tokens/s and ETA."""

from __future__ import annotations

from typing import Optional

from rich import get_console
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """A rich progress bar over optimizer steps; a no-op when disabled or not rank 0.

    It shares rich's global console with the logging handler, so log lines (one per
    validation) print above the bar instead of tearing it.
    """

    def __init__(
        self, total_steps: Optional[int], enabled: bool, console: Optional[Console] = None
    ):
        self.enabled = enabled
        if not enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or get_console(),
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, stats="")
        self.progress.start()

    def update(self, step: int, loss: float, lr: float, tokens_per_sec: float) -> None:
        if self.enabled:
            stats = f"loss {loss:.3f}  lr {lr:.2e}  {tokens_per_sec:,.0f} tok/s"
            self.progress.update(self.task, completed=step, stats=stats)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()
