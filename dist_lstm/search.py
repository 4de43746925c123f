"""Decoding over the decoder's `init_state`/`step` interface.

Greedy search decodes a whole batch at once; finished rows keep emitting padding until
every row has produced EOS or reached its length limit (a * source_length + b).
"""

from __future__ import annotations

from typing import List

import torch

from dist_lstm.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from dist_lstm.model import Seq2Seq


def max_output_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """(B,) longest output (EOS excluded) allowed for each sentence."""
    return (src_lengths.float() * a).long() + b


@torch.no_grad()
def greedy_search(
    model: Seq2Seq, src: torch.Tensor, src_lengths: torch.Tensor, max_len_a: float, max_len_b: int
) -> List[List[int]]:
    """src (B, S), src_lengths (B,) -> one list of target ids per sentence, EOS excluded."""
    device = src.device
    limits = max_output_lengths(src_lengths, max_len_a, max_len_b).to(device)  # (B,)
    state = model.decoder.init_state(model.encode(src, src_lengths))
    tokens = torch.full((src.size(0),), BOS_ID, dtype=torch.long, device=device)
    finished = torch.zeros(src.size(0), dtype=torch.bool, device=device)
    steps = []
    for t in range(int(limits.max())):
        log_probs, state = model.decoder.step(tokens, state)  # (B, V)
        tokens = log_probs.argmax(dim=-1)
        tokens = tokens.masked_fill(finished, PAD_ID)
        finished |= (tokens == EOS_ID) | (t + 1 >= limits)
        steps.append(tokens)
        if bool(finished.all()):
            break
    rows = torch.stack(steps, dim=1).tolist()  # (B, T)
    return [_until_eos(row[: int(limit)]) for row, limit in zip(rows, limits)]


def _until_eos(tokens: List[int]) -> List[int]:
    return tokens[: tokens.index(EOS_ID)] if EOS_ID in tokens else tokens
