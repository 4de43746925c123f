"""Decisions about ending training that the loop delegates: the configured limits
(`TrainingLimits`), the best validation value and early stopping (`BestTracker`), and the
vote all ranks take each step so they stop, or save, at the same step, with rank 0's clock
judging time (`StepVote`)."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from dist_lstm.config.durations import parse_duration
from dist_lstm.evaluation import monitor_mode


class TrainingLimits:
    """trainer.max_steps, max_epochs (checked between epochs) and max_time.

    Whether max_time is up is asked of rank 0's clock alone (`time_is_up`, then the step
    vote): ranks started a moment apart and judging their own clocks would leave the loop
    at different steps and deadlock in the next collective."""

    def __init__(
        self, max_steps: Optional[int], max_epochs: Optional[int], max_time: Optional[str]
    ):
        self.max_steps = max_steps
        self.max_epochs = max_epochs
        self.max_time = max_time
        self.max_seconds = parse_duration(max_time) if max_time else None

    def time_is_up(self, elapsed: float) -> bool:
        return self.max_seconds is not None and elapsed >= self.max_seconds

    def reached(self, step: int, epoch: int, time_up: bool, end_of_epoch: bool) -> Optional[str]:
        """Why training ends now, or None; `time_up` is the ranks' common verdict."""
        if self.max_steps is not None and step >= self.max_steps:
            return f"reached trainer.max_steps={self.max_steps}"
        if end_of_epoch and self.max_epochs is not None and epoch >= self.max_epochs:
            return f"reached trainer.max_epochs={self.max_epochs}"
        if time_up:
            return f"reached trainer.max_time={self.max_time}"
        return None

    def planned_steps(self, steps_per_epoch: int) -> Optional[int]:
        """Total steps for the progress bar's ETA, when max_steps or max_epochs bound it."""
        bounds = [self.max_steps, self.max_epochs and self.max_epochs * steps_per_epoch]
        return min((b for b in bounds if b), default=None)


class BestTracker:
    """The best value of the monitored metric so far, and the validations since it
    improved; `patience` > 0 ends training after that many without improvement."""

    def __init__(self, monitor: str, patience: int = 0):
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.patience = patience
        self.best: Optional[float] = None
        self.best_step: Optional[int] = None
        self.stale = 0  # validations without improvement

    def update(self, value: float, step: int) -> bool:
        """Record a validation's value; True if it is the best so far."""
        better = self.best is None or (
            value < self.best if self.mode == "min" else value > self.best
        )
        if better:
            self.best, self.best_step, self.stale = value, step, 0
        else:
            self.stale += 1
        return better

    def stop_reason(self) -> Optional[str]:
        if self.patience and self.stale >= self.patience:
            return (
                f"early stopping: {self.monitor} did not improve for {self.patience} validations"
            )
        return None

    def describe(self) -> str:
        if self.best is None:
            return "not validated yet"
        return f"best {self.monitor} {self.best:.3f} at step {self.best_step}"

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "stale": self.stale}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.best_step, self.stale = state["best"], state["best_step"], state["stale"]


@dataclass(frozen=True)
class VoteResult:
    stop_signal: Optional[int]  # a stop signal some rank received, else None
    save_due: bool  # rank 0's clock says a timed checkpoint is due
    time_up: bool = False  # rank 0's clock says trainer.max_time is reached

    @property
    def stop_reason(self) -> Optional[str]:
        if self.stop_signal is None:
            return None
        return f"stopped by {signal.Signals(self.stop_signal).name}"


class StepVote:
    """One host-side sum over ranks per optimizer step. Ranks may receive a signal at
    slightly different times, but all must leave the loop at the same step; only rank 0's
    clock counts for timed saves and for trainer.max_time. `host_sum` never waits for the
    accelerator."""

    def __init__(self, host_sum: Callable[[List[float]], List[float]], is_main: bool):
        self.host_sum = host_sum
        self.is_main = is_main

    def poll(
        self, local_signal: Optional[int], save_due_here: bool, time_up_here: bool = False
    ) -> VoteResult:
        local = local_signal or 0
        due = self.is_main and save_due_here
        up = self.is_main and time_up_here
        stopped, signums, saves, ups = self.host_sum(
            [float(local > 0), float(local), float(due), float(up)]
        )
        signum = None
        if stopped > 0:
            signum = local or int(signums / stopped)
        return VoteResult(stop_signal=signum, save_due=saves > 0, time_up=ups > 0)
