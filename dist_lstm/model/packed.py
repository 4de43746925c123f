"""Search's matrix products on CPU through oneDNN, each weight reordered once.

Why: torch sends fp32 matmuls on CPU to MKL. On the benchmarks' machine (AMD EPYC with
AVX-512) MKL ran the decoder's 56-64-row search products at 110-150 GFLOP/s, while
oneDNN, given a copy of the weight already reordered into its blocked layout, ran the
same products at about 200 (and 2048^3 at 215-225 against MKL's 170-190). Search
multiplies the same weights hundreds of times per batch, so one reorder per weight, kept
until the weight changes, pays for itself within a step. Training keeps F.linear: its
weights change every step and autograd needs their gradients.

Search under CPU autocast to bfloat16 (`dist-lstm translate --precision bf16`) packs
bf16 copies, as autocast would have cast the weights for F.linear: on CPUs with
avx512_bf16 oneDNN multiplies them at about twice the fp32 rate.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def _onednn_linear_available() -> bool:
    """oneDNN and its (inductor-facing) packed linear ops are in this torch build."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight
        torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return False
    return True


ONEDNN_LINEAR = _onednn_linear_available()


_generation = 0  # bumped by weights_changed(); part of every copy's validity key


def weights_changed() -> None:
    """Invalidate every reordered copy. Called at each training forward and after each
    optimizer step or state load: fused optimizers (AdamW with fused=True) update weights
    in place without bumping their version counters, so storage and version alone cannot
    tell that a copy is stale. Call it after any such change made elsewhere."""
    global _generation
    _generation += 1


def packed_dtype(x: torch.Tensor, weight: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype `x @ weight.T` runs in on a packed weight, or None where it must run
    through F.linear: packing needs a CPU, no autograd and an fp32 weight; the product
    is fp32, or bf16 inside CPU autocast to bf16 (other autocast dtypes keep F.linear,
    whose casts autocast owns)."""
    if not (
        ONEDNN_LINEAR
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and weight.dtype == torch.float32
    ):
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        return dtype if dtype == torch.bfloat16 else None
    return torch.float32 if x.dtype == torch.float32 else None


class PackedWeight:
    """A oneDNN-reordered copy of one weight (O, I), or of several concatenated along
    their inputs (O, I1 + I2 + ...), with their summed biases; rebuilt when any source
    changes (an optimizer step, a loaded checkpoint: see weights_changed).

    Weights whose storage moves from call to call (ZeRO-3 gathers them for each call)
    would be reordered every time, which costs more than it saves: after a few moves the
    copy is given up and callers fall back to plain F.linear.
    """

    GIVE_UP_AFTER_MOVES = 3

    def __init__(self) -> None:
        self._key: Optional[tuple] = None  # what the copy was made from
        self._weight: Optional[torch.Tensor] = None
        self._bias: Optional[torch.Tensor] = None
        self._moves = 0

    def get(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[Optional[torch.Tensor]] = (),
        dtype: torch.dtype = torch.float32,
    ) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """(packed weight, summed bias) in `dtype`, or None when packing was given up."""
        if self._moves >= self.GIVE_UP_AFTER_MOVES:
            return None
        present = [b for b in biases if b is not None]
        tensors = (*weights, *present)
        pointers = tuple(t.data_ptr() for t in tensors)
        key = (_generation, dtype, pointers, tuple(t._version for t in tensors))
        if key != self._key:
            if self._key is not None and pointers != self._key[2]:
                self._moves += 1
            weight = weights[0] if len(weights) == 1 else torch.cat(list(weights), dim=1)
            self._weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype))
            self._bias = sum(b.detach() for b in present).to(dtype) if present else None
            self._key = key
        return self._weight, self._bias

    def __deepcopy__(self, memo) -> "PackedWeight":
        return PackedWeight()  # a copied module packs its own weights when it needs them

    def __getstate__(self):
        return {}  # the reordered copy is rebuilt on demand, never saved

    def __setstate__(self, state) -> None:
        self.__init__()


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    packed: PackedWeight,
) -> torch.Tensor:
    """F.linear(x, weight, bias), through `packed` in CPU search."""
    dtype = packed_dtype(x, weight)
    if dtype is not None:
        found = packed.get([weight], [bias], dtype)
        if found is not None:
            return _packed_product(x.to(dtype), *found)
    return F.linear(x, weight, bias)


def linear_of_concatenation(
    inputs: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    biases: Sequence[Optional[torch.Tensor]],
    packed: PackedWeight,
) -> torch.Tensor:
    """sum_i inputs[i] @ weights[i].T + sum(biases): one product over the concatenated
    inputs in CPU search (an LSTM layer's input and hidden state against W_ih | W_hh),
    one product per input otherwise. inputs (B, I_i), weights (O, I_i) -> (B, O)."""
    dtype = packed_dtype(inputs[0], weights[0])
    if dtype is not None:
        found = packed.get(weights, biases, dtype)
        if found is not None:
            return _packed_product(torch.cat([x.to(dtype) for x in inputs], dim=1), *found)
    present = [b for b in biases if b is not None]
    out = F.linear(inputs[0], weights[0], sum(present) if present else None)
    for x, w in zip(inputs[1:], weights[1:]):
        out = torch.addmm(out, x, w.t())  # not addmm_: autocast casts only out-of-place ops
    return out


def _packed_product(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """x (..., I) @ reordered weight + bias -> (..., O), all in the copy's dtype."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) that multiplies through a packed
    weight in CPU search."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.packed = PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.packed)
