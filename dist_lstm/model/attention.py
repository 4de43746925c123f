"""Attention scorers: Luong dot and general, Bahdanau additive.

Keys are projected once per sentence (`precompute`), not once per decoder step, because
the decoder calls attention at every step of training and search.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from dist_lstm.config.choices import ATTENTIONS
from dist_lstm.model.cpu.onednn_weights import Linear


class Attention(nn.Module):
    """Scores a query against memory; returns the context vector and the weights.

    dot:      score = q . k          (query and memory sizes must match)
    general:  score = q . (W k)
    bahdanau: score = v . tanh(W_q q + W_k k)
    """

    def __init__(self, kind: str, query_size: int, memory_size: int):
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"unknown attention {kind!r}: use one of {', '.join(ATTENTIONS)}")
        if kind == "dot" and query_size != memory_size:
            raise ValueError(
                f"dot attention needs equal query and memory sizes, got {query_size} "
                f"and {memory_size}"
            )
        self.kind = kind
        if kind == "general":
            self.key_proj = Linear(memory_size, query_size, bias=False)
        elif kind == "bahdanau":
            self.key_proj = Linear(memory_size, query_size, bias=True)
            self.query_proj = Linear(query_size, query_size, bias=False)
            self.energy = Linear(query_size, 1, bias=False)

    def precompute(self, memory: torch.Tensor) -> torch.Tensor:
        """memory (B, S, M) -> keys (B, S, Q), reused at every decoder step."""
        return memory if self.kind == "dot" else self.key_proj(memory)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """query (B, T, Q) for T decoder positions, keys (B, S, Q), memory (B, S, M),
        mask (B, S) True at real tokens.

        Returns context (B, T, M) and weights (B, T, S); weights are exactly 0 at padding.
        """
        if self.kind == "bahdanau":
            projected = self.query_proj(query).unsqueeze(2)  # (B, T, 1, Q)
            hidden = torch.tanh(keys.unsqueeze(1) + projected)  # (B, T, S, Q)
            scores = self.energy(hidden).squeeze(3)  # (B, T, S)
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=2)  # (B, T, S)
        context = torch.bmm(weights, memory)  # (B, T, M)
        return context, weights
