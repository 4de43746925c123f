"""LSTM layers with nn.LSTM's parameters and state-dict keys, for the calls where
nn.LSTM's own CPU kernels do needless work: the encoder's packed sequences under autograd
and the decoder's one-position steps, whose recurrences live in model/cpu/lstm.py.
Everywhere else (GPU, whole sequences) they defer to nn.LSTM, so checkpoints and cuDNN are
unaffected.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from dist_lstm.model.cpu.lstm import packed_recurrence, search_cell
from dist_lstm.model.cpu.onednn_weights import ONEDNN_LINEAR, ReorderedWeight

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
        return packed_recurrence(self, input)

    def _runs_own_recurrence(self, input, hx) -> bool:
        return (
            isinstance(input, PackedSequence)
            and hx is None
            and input.data.device.type == "cpu"
            and torch.is_grad_enabled()
            and self.proj_size == 0
        )


class DecoderLSTM(_AutocastSafeLSTM):
    """nn.LSTM (same parameters and state-dict keys) whose one-position calls run layer by
    layer here rather than through nn.LSTM's fused CPU kernel.

    Why: on CPU each one-position nn.LSTM call reorders the weights for oneDNN and keeps
    that copy for backward, once per target position. Training runs one
    `torch.lstm_cell` per layer (cells save only their gates); search runs one product
    per layer of [input | hidden] against [W_ih | W_hh] reordered once
    (model/cpu/), or without oneDNN two GEMMs up to SEARCH_CELL_MAX_ROWS rows. A
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
        return search_cell(x, h, c, (w_ih, w_hh, b_ih, b_hh), self.reordered[layer])
