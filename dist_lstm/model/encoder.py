"""Bidirectional multi-layer LSTM encoder over packed sequences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


@dataclass
class EncoderOutput:
    """What the decoder attends to and starts from. B = batch, S = source length."""

    memory: torch.Tensor  # (B, S, H) top-layer outputs, zeros at padding
    mask: torch.Tensor  # (B, S) True at real tokens
    final: Tuple[torch.Tensor, torch.Tensor]  # (h, c), each (B, H): top layer, both directions


def lstm_cell_from_gates(gates: torch.Tensor, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """gates (B, 4H) pre-activations in nn.LSTM's order (input, forget, cell, output),
    c (B, H) -> the next (h, c)."""
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def run_packed_direction(
    gates_in: Sequence[torch.Tensor], w_hh: torch.Tensor, reverse: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One direction of one layer over a packed batch.

    gates_in: per time step t, (B_t, 4H) input projections of the B_t sentences still
    running at t (packed order: sentences sorted longest first, so B_t never grows).
    Returns the outputs (N, H) in packed order and each sentence's final (h, c), (B, H)
    each: after its last token going forward, after its first going backward.
    """
    hidden = w_hh.size(1)
    outputs: List[Optional[torch.Tensor]] = [None] * len(gates_in)
    finished_h: List[torch.Tensor] = []  # rows that ended, shortest sentences first
    finished_c: List[torch.Tensor] = []
    steps = range(len(gates_in) - 1, -1, -1) if reverse else range(len(gates_in))
    h = c = gates_in[0].new_zeros(0, hidden)
    for t in steps:
        rows = gates_in[t].size(0)
        if rows > h.size(0):  # going backward, shorter sentences start with zero state
            start = h.new_zeros(rows - h.size(0), hidden)
            h, c = torch.cat([h, start]), torch.cat([c, start])
        elif rows < h.size(0):  # going forward, the shortest sentences have ended
            finished_h.append(h[rows:])
            finished_c.append(c[rows:])
            h, c = h[:rows], c[:rows]
        h, c = lstm_cell_from_gates(torch.addmm(gates_in[t], h, w_hh.t()), c)
        outputs[t] = h
    finals_h = torch.cat([h, *reversed(finished_h)])
    finals_c = torch.cat([c, *reversed(finished_c)])
    return torch.cat(outputs), finals_h, finals_c


class EncoderLSTM(nn.LSTM):
    """nn.LSTM (same parameters and state-dict keys) that runs its own recurrence over a
    packed sequence when it trains on CPU.

    nn.LSTM on CPU projects a packed layer's inputs for all tokens at once, (N, 4H), then
    slices that per time step; autograd turns every slice's backward into a zero-filled
    (N, 4H) gradient added into the total, so backward moves steps x N x 4H floats per
    layer and direction. Here the projection is split into its steps once (the backward
    of a split is one concatenation) and each step adds only the recurrent GEMM. On GPU
    (cuDNN) and without gradients (search) nn.LSTM's own kernels are kept.
    """

    def forward(self, input, hx=None):
        if not self._runs_own_recurrence(input, hx):
            return super().forward(input, hx)
        return self._packed_forward(input)

    def _runs_own_recurrence(self, input, hx) -> bool:
        return (
            isinstance(input, PackedSequence)
            and hx is None
            and input.data.device.type == "cpu"
            and torch.is_grad_enabled()
            and self.proj_size == 0
        )

    def _packed_forward(
        self, packed: PackedSequence
    ) -> Tuple[PackedSequence, Tuple[torch.Tensor, torch.Tensor]]:
        sizes = packed.batch_sizes.tolist()  # sentences running at each time step
        data = packed.data  # (N, I)
        finals_h, finals_c = [], []
        directions = ("", "_reverse") if self.bidirectional else ("",)
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout and self.training:
                data = F.dropout(data, self.dropout, training=True)
            outputs = []
            for suffix in directions:
                name = f"_l{layer}{suffix}"
                w_ih, w_hh = getattr(self, "weight_ih" + name), getattr(self, "weight_hh" + name)
                bias = None
                if self.bias:
                    bias = getattr(self, "bias_ih" + name) + getattr(self, "bias_hh" + name)
                gates_in = F.linear(data, w_ih, bias).split(sizes)  # all tokens in one GEMM
                out, h, c = run_packed_direction(gates_in, w_hh, reverse=bool(suffix))
                outputs.append(out)
                finals_h.append(h)
                finals_c.append(c)
            data = torch.cat(outputs, dim=1)  # (N, H * directions)
        h, c = torch.stack(finals_h), torch.stack(finals_c)  # (L * D, B, H), packed order
        if packed.unsorted_indices is not None:
            h = h.index_select(1, packed.unsorted_indices)
            c = c.index_select(1, packed.unsorted_indices)
        return packed._replace(data=data), (h, c)


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
    ):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
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
        embedded = self.dropout(self.embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(
            embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        packed_out, (h, c) = self.lstm(packed)
        memory, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))
        # h, c: (layers * directions, B, H / directions); keep the top layer's directions.
        directions = 2 if self.lstm.bidirectional else 1
        top_h = h[-directions:].transpose(0, 1).reshape(src.size(0), -1)  # (B, H)
        top_c = c[-directions:].transpose(0, 1).reshape(src.size(0), -1)  # (B, H)
        return EncoderOutput(
            memory=self.dropout(memory), mask=src != self.padding_idx, final=(top_h, top_c)
        )
