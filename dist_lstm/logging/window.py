"""The loss, tokens and time since the last logged step: what one metrics line averages.

Per rank, and part of every checkpoint (registered per rank), so the first line logged
after a resume averages the same steps as in a run that was never stopped.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

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

    def raise_if_diverged(self, step: int) -> None:
        """Stop on a non-finite loss before it is logged or saved.

        Checked at logging steps and before every save rather than after every step, which
        would make a GPU wait each step; a checkpoint therefore never holds the weights of
        a diverged run, and at most log_every_steps steps are computed in vain.
        """
        if self.steps and not bool(torch.isfinite(torch.as_tensor(self.loss_sum))):
            raise FloatingPointError(
                f"loss became {float(self.loss_sum)} between steps {step - self.steps + 1} "
                f"and {step}: lower optim.lr, keep strategy.clip_grad_norm > 0, or check the "
                "data. Checkpoints written before it are intact."
            )

    def summary(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> Dict[str, Any]:
        """The logged line's loss and speed over every rank (reads the device once)."""
        totals = all_reduce_sum(
            torch.tensor([float(self.loss_sum), self.tokens], dtype=torch.float64)
        )
        loss = float(totals[0] / max(totals[1], 1))
        return {
            "loss": loss,
            "ppl": math.exp(min(loss, 50.0)),
            "lr": None,  # the trainer's to fill: keeps the metrics line's column order
            "tokens_per_sec": float(totals[1]) / max(self.seconds, 1e-9),
            "step_time_s": self.seconds / max(self.steps, 1),
            "grad_norm": None if self.grad_norm is None else float(self.grad_norm),
        }

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
