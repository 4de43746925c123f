"""Mixed precision: which autocast to use, and whether this device can run it at all.

`strategy.precision` is 32 (full precision), bf16 (autocast to bfloat16; no loss scaling
needed) or fp16 (autocast to float16 with a GradScaler; GPUs only). Support is probed
at start-up rather than assumed: on CPUs without bf16 instructions autocast around
nn.LSTM fails deep inside oneDNN, which would otherwise surface as a cryptic error at
the first training step.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import ContextManager, Optional

import torch

from dist_lstm.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def configure_tf32(enabled: bool, device: torch.device) -> bool:
    """Let fp32 matrix products and cuDNN run as TF32 on GPUs that have it (compute
    capability 8.0+): several times the fp32 rate, 10-bit mantissas in the products only.
    Returns whether TF32 is in use; CPUs and older GPUs are left as they are."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 0):
        return False
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return enabled


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context for a forward pass at `precision` (none for 32)."""
    if precision == "32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


# oneDNN and ideep keep a compiled primitive per product shape (up to 1,024 each) and
# training's shapes change with every batch and decoder position: capped for 16-bit CPU
# training, which runs through oneDNN (memory figures in benchmarks/RESULTS.md).
ONEDNN_TRAINING_CACHE_CAPACITIES = {
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "16",
    "LRU_CACHE_CAPACITY": "16",
}


def limit_onednn_caches(precision: str, device: torch.device) -> None:
    """Cap oneDNN's and ideep's primitive caches for 16-bit training on CPU, each unless
    the user set it. Both are read once, at the first primitive, so this runs before any
    (the precision probe is one)."""
    if device.type == "cpu" and precision != "32":
        for variable, capacity in ONEDNN_TRAINING_CACHE_CAPACITIES.items():
            os.environ.setdefault(variable, capacity)


def grad_scaler(precision: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def _probe_lstm(precision: str, device: torch.device) -> None:
    """One tiny LSTM forward and backward under autocast: raises where unsupported.
    Gradients on even when called under no_grad (e.g. a Translator built there)."""
    lstm = torch.nn.LSTM(8, 8, batch_first=True).to(device)
    with torch.enable_grad():
        with autocast(precision, device):
            out, _ = lstm(torch.randn(2, 3, 8, device=device))
        out.float().sum().backward()


def _setting(option: str, value: str) -> str:
    """How the user writes `option` set to `value`: a Hydra key or a command-line flag."""
    return f"{option} {value}" if option.startswith("--") else f"{option}={value}"


def check_precision(
    precision: str, device: torch.device, option: str = "strategy.precision"
) -> None:
    """Raise ConfigError naming `option` (strategy.precision, or the CLI's --precision)
    if this device cannot run LSTMs at `precision`."""
    if precision == "32":
        return
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError(
            f"{_setting(option, 'fp16')} is invalid on a CPU: float16 needs a GPU; "
            f"use {_setting(option, 'bf16')} (on CPUs with bf16 support) or "
            f"{_setting(option, '32')}."
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"{_setting(option, 'bf16')} is invalid on this GPU (no bfloat16 support); "
            f"use {_setting(option, 'fp16')} or {_setting(option, '32')}."
        )
    try:
        _probe_lstm(precision, device)
    except RuntimeError as exc:
        raise ConfigError(
            f"{_setting(option, precision)} is not supported for LSTMs on this {device.type} "
            f"({str(exc).splitlines()[0][:120]}); use {_setting(option, '32')}."
        ) from None
