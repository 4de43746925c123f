"""LSTM layers with nn.LSTM's parameters and state-dict keys, for the calls where
nn.LSTM's own CPU kernels do needless work: the encoder's packed sequences under autograd
and the decoder's one-position steps. Everywhere else (GPU, whole sequences) they defer to
nn.LSTM, so checkpoints and cuDNN are unaffected.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from dist_lstm.model.cpu.onednn_weights import (
    ONEDNN_LINEAR,
    ReorderedWeight,
    linear_of_concatenation,
)


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


# (device type, autocast dtype) -> the dtype nn.LSTM outputs under that autocast.
_AUTOCAST_RNN_DTYPES: Dict[Tuple[str, torch.dtype], torch.dtype] = {}


def probe_autocast_rnn_dtype(device: torch.device) -> torch.dtype:
    """Run a tiny nn.LSTM under the current autocast on `device` and report its output
    dtype. Why: autocast's cuDNN RNN wrapper has cast to float16 whatever the autocast
    dtype (cuDNN took bfloat16 RNNs only from 9.13), and float16 without a grad scaler
    underflows."""
    probe = nn.LSTM(4, 4).to(device)
    with torch.no_grad():
        output, _ = probe(torch.zeros(2, 1, 4, device=device))
    return output.dtype


def lstm_outside_autocast(device: torch.device) -> bool:
    """Whether nn.LSTM must run in fp32 outside autocast: bf16 autocast is on for
    `device` and would run the LSTM in float16. Probed once per device type and dtype."""
    if not torch.is_autocast_enabled(device.type):
        return False
    wanted = torch.get_autocast_dtype(device.type)
    key = (device.type, wanted)
    if key not in _AUTOCAST_RNN_DTYPES:
        _AUTOCAST_RNN_DTYPES[key] = probe_autocast_rnn_dtype(device)
    return wanted == torch.bfloat16 and _AUTOCAST_RNN_DTYPES[key] not in (
        torch.bfloat16,
        torch.float32,
    )


class _AutocastSafeLSTM(nn.LSTM):
    def _lstm_forward(self, input, hx=None):
        """nn.LSTM's own forward; in fp32 outside autocast where bf16 autocast would make
        it float16 (see lstm_outside_autocast)."""
        data = input.data if isinstance(input, PackedSequence) else input
        if not lstm_outside_autocast(data.device):
            return nn.LSTM.forward(self, input, hx)
        if isinstance(input, PackedSequence):
            input = input._replace(data=input.data.float())
        else:
            input = input.float()
        if hx is not None:
            hx = tuple(state.float() for state in hx)
        with torch.autocast(data.device.type, enabled=False):
            return nn.LSTM.forward(self, input, hx)


class EncoderLSTM(_AutocastSafeLSTM):
    """nn.LSTM (same parameters and state-dict keys) that runs its own recurrence over a
    packed sequence when it trains on CPU.

    Why: nn.LSTM's CPU backward turns each time step's slice of the packed input
    projection into a zero-filled (N, 4H) gradient; splitting the projection once makes
    that one concatenation. GPU (cuDNN) and search keep nn.LSTM's kernels. Figures:
    benchmarks/RESULTS.md, training speed.
    """

    def forward(self, input, hx=None):
        if not self._runs_own_recurrence(input, hx):
            return self._lstm_forward(input, hx)
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


class DecoderLSTM(_AutocastSafeLSTM):
    """nn.LSTM (same parameters and state-dict keys) whose one-position calls run layer by
    layer here rather than through nn.LSTM's fused CPU kernel.

    Why: on CPU each one-position nn.LSTM call reorders the weights for oneDNN and keeps
    that copy for backward, once per target position. Training runs one
    `torch.lstm_cell` per layer (cells save only their gates); search runs one product
    per layer of [input | hidden] against [W_ih | W_hh] reordered once
    (onednn_weights.py), or without oneDNN two GEMMs up to SEARCH_CELL_MAX_ROWS rows. A
    module call either way, so ZeRO-3 gathers the weights for it. Figures:
    benchmarks/RESULTS.md.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reordered = [ReorderedWeight() for _ in range(self.num_layers)]

    def forward(self, input, hx=None):
        single_step = input.dim() == 3 and input.size(1) == 1 and self.batch_first
        if not (single_step and hx is not None):
            return self._lstm_forward(input, hx)
        if torch.is_grad_enabled() or (
            input.device.type == "cpu"
            and (ONEDNN_LINEAR or input.size(0) <= self.SEARCH_CELL_MAX_ROWS)
        ):
            return self._cells(input, hx)
        return self._lstm_forward(input, hx)

    # Without oneDNN copies, above this many rows nn.LSTM's own call (and its per-call
    # weight reorder) is as fast.
    SEARCH_CELL_MAX_ROWS = 256

    def _cells(self, input, hx):
        h0, c0 = hx  # (L, B, H) each
        x = input[:, 0]  # (B, I)
        hs, cs = [], []
        for layer in range(self.num_layers):
            h, c = self._cell(layer, x, h0[layer], c0[layer])
            hs.append(h)
            cs.append(c)
            x = h
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        return x.unsqueeze(1), (torch.stack(hs), torch.stack(cs))

    def _cell(self, layer: int, x, h, c):
        """One layer, one position: x (B, I), h and c (B, H) -> the next (h, c)."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        w_ih, w_hh, b_ih, b_hh = (getattr(self, f"{name}_l{layer}") for name in names)
        if torch.is_grad_enabled():
            return torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
        reordered = self.reordered[layer]
        gates = linear_of_concatenation((x, h), (w_ih, w_hh), (b_ih, b_hh), reordered)  # (B, 4H)
        return lstm_cell_from_gates(gates, c)
