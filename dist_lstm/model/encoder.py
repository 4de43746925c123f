"""Bidirectional multi-layer LSTM encoder over packed sequences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import (
    PackedSequence,
    invert_permutation,
    pack_padded_sequence,
    pad_packed_sequence,
)

from dist_lstm.model.lstm import EncoderLSTM
from dist_lstm.model.word_dropout import WordDropout


@dataclass
class EncoderOutput:
    """What the decoder attends to and starts from. B = batch, S = source length."""

    memory: torch.Tensor  # (B, S, H) top-layer outputs, zeros at padding
    mask: torch.Tensor  # (B, S) True at real tokens
    final: Tuple[torch.Tensor, torch.Tensor]  # (h, c), each (B, H): top layer, both directions


class Encoder(nn.Module):
    """Embeds source ids and runs a (bi)LSTM; `output_size` is H for the decoder.

    Sequences are packed so each sentence's final state is taken at its own last token,
    not after a run of padding: a padded batch gives the same result as one sentence alone.
    """

    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        padding_idx: int,
        word_dropout: float = 0.0,
    ):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = WordDropout(word_dropout)
        self.lstm = EncoderLSTM(
            emb_dim,
            hidden_size // directions,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_size = hidden_size
        self.padding_idx = padding_idx

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """src: (B, S) ids; src_lengths: (B,) on CPU, every length >= 1."""
        embedded = self.dropout(self.word_dropout(self.embedding(src)))  # (B, S, E)
        packed = pack_by_length(embedded, src_lengths.cpu())
        packed_out, (h, c) = self.lstm(packed)
        memory, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))
        # h, c: (layers * directions, B, H / directions); keep the top layer's directions.
        directions = 2 if self.lstm.bidirectional else 1
        top_h = h[-directions:].transpose(0, 1).reshape(src.size(0), -1)  # (B, H)
        top_c = c[-directions:].transpose(0, 1).reshape(src.size(0), -1)  # (B, H)
        return EncoderOutput(
            memory=self.dropout(memory), mask=src != self.padding_idx, final=(top_h, top_c)
        )


def pack_by_length(embedded: torch.Tensor, lengths: torch.Tensor) -> PackedSequence:
    """pack_padded_sequence(enforce_sorted=False) without its wait for the GPU: the same
    length order (sorted on the host, as it sorts) goes to the device from pinned memory
    without blocking, where pack_padded_sequence copies it from pageable memory, which
    waits for all the device's queued work at every step. The same PackedSequence.

    embedded (B, S, E) on any device; lengths (B,) on the host."""
    lengths, order = torch.sort(lengths.to(torch.int64), descending=True)
    if embedded.is_cuda:
        order = order.pin_memory()
    order = order.to(embedded.device, non_blocking=True)
    packed = pack_padded_sequence(
        embedded.index_select(0, order), lengths, batch_first=True, enforce_sorted=True
    )
    return PackedSequence(packed.data, packed.batch_sizes, order, invert_permutation(order))
