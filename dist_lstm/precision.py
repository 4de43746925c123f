"""Mixed precision: which autocast to use, and whether this device can run it at all.

`trainer.precision` is 32 (full precision), bf16 (autocast to bfloat16; no loss scaling
needed) or fp16 (autocast to float16 with a GradScaler; GPUs only). Support is probed
at start-up rather than assumed: on CPUs without bf16 instructions autocast around
nn.LSTM fails deep inside oneDNN, which would otherwise surface as a cryptic error at
the first training step.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Optional

import torch

from dist_lstm.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context for a forward pass at `precision` (none for 32)."""
    if precision == "32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def _probe_lstm(precision: str, device: torch.device) -> None:
    """One tiny LSTM forward and backward under autocast: raises where unsupported."""
    lstm = torch.nn.LSTM(8, 8, batch_first=True).to(device)
    with autocast(precision, device):
        out, _ = lstm(torch.randn(2, 3, 8, device=device))
    out.float().sum().backward()


def check_precision(precision: str, device: torch.device) -> None:
    """Raise ConfigError naming trainer.precision if this device cannot train at it."""
    if precision == "32":
        return
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError(
            "trainer.precision='fp16' is invalid on a CPU: float16 training needs a GPU; "
            "use trainer.precision=bf16 (on CPUs with bf16 support) or 32."
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "trainer.precision='bf16' is invalid on this GPU (no bfloat16 support); "
            "use trainer.precision=fp16 or 32."
        )
    try:
        _probe_lstm(precision, device)
    except RuntimeError as exc:
        raise ConfigError(
            f"trainer.precision={precision!r} is not supported for LSTMs on this {device.type} "
            f"({str(exc).splitlines()[0][:120]}); use trainer.precision=32."
        ) from None
