"""LSTM layers with nn.LSTM's parameters and state-dict keys, for the calls where
nn.LSTM's own CPU kernels do needless work: the encoder's packed sequences under autograd
and the decoder's one-position steps, whose recurrences live in model/cpu/lstm.py;
and, on a GPU, for the encoder's dropout between layers, which cuDNN would draw
from a state no checkpoint holds. Everywhere else (whole sequences, search) they
defer to nn.LSTM, so checkpoints are unaffected.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

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
        return self._autocast_safe(lambda i, h: nn.LSTM.forward(self, i, h), input, hx)

    @staticmethod
    def _autocast_safe(run, input, hx):
        """`run(input, hx)`, in fp32 outside autocast where lstm_outside_autocast says so."""
        data = input.data if isinstance(input, PackedSequence) else input
        if not lstm_outside_autocast(data.device):
            return run(input, hx)
        if isinstance(input, PackedSequence):
            input = input._replace(data=input.data.float())
        else:
            input = input.float()
        if hx is not None:
            hx = tuple(state.float() for state in hx)
        with torch.autocast(data.device.type, enabled=False):
            return run(input, hx)


class EncoderLSTM(_AutocastSafeLSTM):
    """nn.LSTM (same parameters and state-dict keys) that runs its own recurrence over a
    packed sequence when it trains on CPU, and on a GPU runs one cuDNN call per layer
    when there is dropout between layers.

    Why, CPU: nn.LSTM's CPU backward turns each time step's slice of the packed input
    projection into a zero-filled (N, 4H) gradient; splitting the projection once makes
    that one concatenation. Search keeps nn.LSTM's kernels. Figures: benchmarks/RESULTS.md,
    training speed.

    Why, GPU: cuDNN's multi-layer call draws the dropout between layers from a state of
    its own, seeded anew in every process and absent from torch.cuda.get_rng_state(), so
    a resumed run drew other masks than the uninterrupted one. Layer by layer, the dropout
    between is F.dropout on torch's generator, which checkpoints restore
    (checkpoint/rng.py). Each layer's weights get a cuDNN buffer of their own
    (flatten_parameters), so no call copies them.
    """

    def forward(self, input, hx=None):
        if self._runs_own_recurrence(input, hx):
            return packed_recurrence(self, input)
        if isinstance(input, PackedSequence) and hx is None:
            if self.runs_layer_by_layer(input.data.device):
                return self._autocast_safe(lambda i, _: self._layer_by_layer(i), input, None)
        return self._lstm_forward(input, hx)

    @property
    def _dropout_between_layers(self) -> bool:
        return self.num_layers > 1 and self.dropout > 0 and self.proj_size == 0

    def runs_layer_by_layer(self, device: torch.device) -> bool:
        """On a GPU, with dropout between layers: one cuDNN call per layer (see above)."""
        return device.type == "cuda" and self._dropout_between_layers

    def _layer_by_layer(
        self, packed: PackedSequence
    ) -> Tuple[PackedSequence, Tuple[torch.Tensor, torch.Tensor]]:
        """nn.LSTM's packed forward one layer at a time, F.dropout between layers."""
        data, batch_sizes = packed.data, packed.batch_sizes
        directions = 2 if self.bidirectional else 1
        zeros = data.new_zeros(directions, int(batch_sizes[0]), self.hidden_size)
        per_layer = len(self._flat_weights_names) // self.num_layers
        finals_h, finals_c = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.training:
                data = F.dropout(data, self.dropout, training=True)
            names = self._flat_weights_names[layer * per_layer : (layer + 1) * per_layer]
            weights = [getattr(self, name) for name in names]
            data, h, c = torch._VF.lstm(
                data, batch_sizes, (zeros, zeros), weights, self.bias, 1, 0.0,
                self.training, self.bidirectional,
            )  # fmt: skip
            finals_h.append(h)
            finals_c.append(c)
        hidden = (torch.cat(finals_h), torch.cat(finals_c))  # (L * D, B, H), packed order
        return packed._replace(data=data), self.permute_hidden(hidden, packed.unsorted_indices)

    def flatten_parameters(self) -> None:
        """nn.LSTM's one cuDNN buffer for all layers; with dropout between layers, one
        buffer per layer instead, as _layer_by_layer's calls take them."""
        if not self._dropout_between_layers:
            return super().flatten_parameters()
        weights = self._flat_weights
        if len(weights) != len(self._flat_weights_names) or not _cudnn_can_flatten(weights):
            return None
        import torch.backends.cudnn.rnn as cudnn_rnn

        per_layer = len(weights) // self.num_layers
        directions = 2 if self.bidirectional else 1
        with torch.cuda.device_of(weights[0]), torch.no_grad():
            for layer in range(self.num_layers):
                torch._cudnn_rnn_flatten_weight(
                    weights[layer * per_layer : (layer + 1) * per_layer],
                    4 if self.bias else 2,
                    self.input_size if layer == 0 else self.hidden_size * directions,
                    cudnn_rnn.get_cudnn_mode(self.mode),
                    self.hidden_size,
                    self.proj_size,
                    1,
                    self.batch_first,
                    bool(self.bidirectional),
                )
        return None

    def _runs_own_recurrence(self, input, hx) -> bool:
        return (
            isinstance(input, PackedSequence)
            and hx is None
            and input.data.device.type == "cpu"
            and torch.is_grad_enabled()
            and self.proj_size == 0
        )


def _cudnn_can_flatten(weights: Sequence[object]) -> bool:
    """nn.LSTM.flatten_parameters' conditions: CUDA tensors of one dtype that cuDNN takes,
    none aliasing another, and torch using flattened cuDNN weights at all."""
    if not all(isinstance(w, torch.Tensor) for w in weights):
        return False
    dtype = weights[0].dtype
    if not all(
        w.dtype == dtype and w.is_cuda and torch.backends.cudnn.is_acceptable(w) for w in weights
    ):
        return False
    return len({w.data_ptr() for w in weights}) == len(weights) and bool(
        torch._use_cudnn_rnn_flatten_weight()
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
