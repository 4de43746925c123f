"""Label-smoothed cross-entropy over target tokens, padding excluded."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from dist_lstm.data.tokenizer import PAD_ID


def sequence_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> Tuple[torch.Tensor, int]:
    """logits (B, T, V), targets (B, T) with PAD_ID at padding.

    Returns the summed loss over real tokens and their count; callers divide, so that
    gradient accumulation and cross-rank averaging can weigh batches by tokens.
    """
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        targets.reshape(-1),
        ignore_index=PAD_ID,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    return loss, int((targets != PAD_ID).sum())
