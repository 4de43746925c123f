"""The LSTM recurrences the model's layers (dist_lstm/model/lstm.py) run on CPU instead of
nn.LSTM's kernels: the encoder's over a packed batch under autograd, and the decoder's
one-position step in search. Why each is faster: the layers' docstrings; figures:
benchmarks/RESULTS.md, training speed.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from dist_lstm.model.cpu.onednn_weights import ReorderedWeight, linear_of_concatenation


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


def packed_recurrence(
    lstm: nn.LSTM, packed: PackedSequence
) -> Tuple[PackedSequence, Tuple[torch.Tensor, torch.Tensor]]:
    """What `lstm(packed)` returns from a zero state, with `lstm`'s parameters, dropout
    and directions, computed by run_packed_direction: each layer's input projection of
    all tokens in one GEMM, split by time step once."""
    sizes = packed.batch_sizes.tolist()  # sentences running at each time step
    data = packed.data  # (N, I)
    finals_h, finals_c = [], []
    directions = ("", "_reverse") if lstm.bidirectional else ("",)
    for layer in range(lstm.num_layers):
        if layer > 0 and lstm.dropout and lstm.training:
            data = F.dropout(data, lstm.dropout, training=True)
        outputs = []
        for suffix in directions:
            name = f"_l{layer}{suffix}"
            w_ih, w_hh = getattr(lstm, "weight_ih" + name), getattr(lstm, "weight_hh" + name)
            bias = None
            if lstm.bias:
                bias = getattr(lstm, "bias_ih" + name) + getattr(lstm, "bias_hh" + name)
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


def search_cell(
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    weights: Sequence[Optional[torch.Tensor]],
    reordered: ReorderedWeight,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One layer, one position, no autograd: x (B, I), h and c (B, H), weights (W_ih, W_hh,
    b_ih, b_hh) -> the next (h, c), with one product of [x | h] against [W_ih | W_hh]
    (a oneDNN copy reordered once, where oneDNN is available)."""
    w_ih, w_hh, b_ih, b_hh = weights
    gates = linear_of_concatenation((x, h), (w_ih, w_hh), (b_ih, b_hh), reordered)  # (B, 4H)
    return lstm_cell_from_gates(gates, c)
