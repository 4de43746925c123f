"""Word dropout: whole input tokens dropped at random while training.

On a small corpus such as Multi30k the model overfits to exact source words and to the
gold prefix it is fed; dropping a token's entire embedding (not single units, as
`nn.Dropout` does) forces it to translate from context. The kept embeddings are scaled
by 1 / (1 - p), as in ordinary dropout, so evaluation needs no correction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WordDropout(nn.Module):
    """(B, T, E) embeddings -> the same with a fraction `p` of the T positions zeroed."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"word dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return embedded
        keep = F.dropout(embedded.new_ones(embedded.shape[:-1] + (1,)), self.p, training=True)
        return embedded * keep  # (B, T, 1) broadcast over E

    def extra_repr(self) -> str:
        return f"p={self.p}"
