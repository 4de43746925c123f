"""DeepSpeed ZeRO, configured from our own config (no second config file).

The DeepSpeed config dict is derived from `optim`, `trainer` and `strategy` values, so
users keep one source of truth. Gradient accumulation stays with our trainer: DeepSpeed
runs in unmanaged mode, where `backward` only accumulates locally and `step` is the
boundary that reduces gradients, clips and updates. Optimizers are plain torch ones, so
nothing needs compiling (DeepSpeed's CPU accelerator runs them too).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from dist_lstm.strategy.base import Strategy
from dist_lstm.strategy.ddp import CollectivesMixin, init_process_group
from dist_lstm.topology import Topology


def deepspeed_config(zero_stage: int, clip_grad_norm: float, precision: str) -> Dict[str, Any]:
    """The DeepSpeed config dict for our training loop."""
    return {
        # DeepSpeed casts the model itself (no autocast from our side).
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        # Our batches are token budgets, not a fixed sentence count; DeepSpeed only
        # uses this for its throughput bookkeeping.
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": clip_grad_norm,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class DeepSpeedStrategy(CollectivesMixin, Strategy):
    def __init__(
        self,
        topology: Topology,
        clip_grad_norm: float,
        zero_stage: int,
        precision: str = "32",
        backend: str = "auto",
        timeout_s: float = 600,
    ):
        super().__init__(topology, clip_grad_norm)  # no autocast/scaler of ours: see config
        self.zero_stage = zero_stage
        self.deepspeed_precision = precision
        init_process_group(topology, backend, timeout_s)
        self.engine = None

    def wrap(self, model: torch.nn.Module, optimizer_factory) -> None:
        import deepspeed

        model = model.to(self.device)
        optimizer = optimizer_factory(model)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            config=deepspeed_config(self.zero_stage, self.clip_grad_norm, self.deepspeed_precision),
        )
        self.model = self.engine
        # The LR schedule and logging act on the torch optimizer DeepSpeed wraps.
        self.optimizer = optimizer

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.engine.module

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> Optional[float]:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def model_state_dict(self) -> Dict[str, torch.Tensor]:
        # Stages 0-1 keep full weights in every rank's module (only optimizer state is
        # partitioned), so the module's own state dict is complete.
        return {k: v.detach().float().cpu() for k, v in self.engine.module.state_dict().items()}
