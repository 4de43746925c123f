"""One process on one device (CPU or a single GPU)."""

from __future__ import annotations

from typing import Any, List

import torch

from dist_lstm.strategy.base import Strategy


class SingleDeviceStrategy(Strategy):
    def wrap(self, model: torch.nn.Module, optimizer_factory) -> None:
        self.model = model.to(self.device)
        self.optimizer = optimizer_factory(self.model)

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.model

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather_objects(self, obj: Any) -> List[Any]:
        return [obj]

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return obj

    def barrier(self) -> None:
        pass
