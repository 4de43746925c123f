"""One process on one device (CPU or a single GPU)."""

from __future__ import annotations

from typing import Any, List, Optional

import torch

from dist_lstm.strategy.base import Strategy


class SingleDeviceStrategy(Strategy):
    def wrap(self, model: torch.nn.Module, optimizer_factory) -> None:
        self.model = model.to(self.device)
        self.optimizer = optimizer_factory(self.model)

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.model

    def backward(self, loss: torch.Tensor, sync_gradients: bool) -> None:
        loss.backward()

    def step(self) -> Optional[float]:
        norm = None
        if self.clip_grad_norm > 0:
            norm = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather_objects(self, obj: Any) -> List[Any]:
        return [obj]

    def barrier(self) -> None:
        pass
