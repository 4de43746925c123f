"""The loss, tokens and time since the last logged step: what one metrics line averages.

Per rank, and part of every checkpoint (registered per rank), so the first line logged
after a resume averages the same steps as in a run that was never stopped.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple, Union

import torch


class LossWindow:
    """The loss sum stays a device tensor (adding to it does not wait for the device)
    until a logging step reads it."""

    def __init__(self) -> None:
        self.grad_norm: Optional[torch.Tensor] = None  # of the latest optimizer step
        self.reset()

    def reset(self) -> None:
        self.loss_sum: Union[float, torch.Tensor] = 0.0
        self.tokens = 0
        self.steps = 0
        self.restart_clock()

    def restart_clock(self) -> None:
        self.started = time.monotonic()

    def add(self, micro_batch: Tuple[torch.Tensor, int]) -> None:
        loss_sum, tokens = micro_batch
        self.loss_sum = self.loss_sum + loss_sum
        self.tokens += tokens

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def state_dict(self) -> Dict[str, Any]:
        loss = self.loss_sum
        return {
            "loss_sum": loss.detach().cpu() if isinstance(loss, torch.Tensor) else loss,
            "tokens": self.tokens,
            "steps": self.steps,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.loss_sum, self.tokens, self.steps = state["loss_sum"], state["tokens"], state["steps"]

    def start_fresh(self, step: int) -> None:
        """No window for this rank in the checkpoint (written by fewer ranks)."""
        self.reset()
