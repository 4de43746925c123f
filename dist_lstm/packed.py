"""The model's matrix products on CPU through oneDNN, on weights reordered once per change.

Why: torch sends fp32 matmuls on CPU to MKL. On the benchmarks' machine (AMD EPYC with
AVX-512) MKL ran the decoder's 56-64-row search products at 110-150 GFLOP/s and the
training shapes at 170-185, while oneDNN, given a copy of the weight already reordered
into its blocked layout, ran the same products at about 200-220 (and 2048^3 at 215-225
against MKL's 170-190). A weight is multiplied many times between changes (every decoder
position of a batch, every step of a search), so one reorder per change pays for itself
at once.

Training uses the packed copies for the forward product and for the input gradient
(dy @ W, on a reordered copy of W.T); the weight gradient dy.T @ x stays with torch.mm,
which measured as fast or faster for those shapes (the long dimension is the reduction).
Autocast (bf16/fp16 training), GPUs and builds without oneDNN take F.linear.
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


def packing_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `x @ weight.T` runs on a packed weight: fp32 on CPU, outside autocast."""
    return (
        ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def _reorder(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous())


def _product(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x (..., I) @ weight.T + bias with `weight` a reordered copy (O, I)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class PackedWeight:
    """Reordered copies of one weight (O, I), or of several concatenated along their
    inputs (O, I1 + I2 + ...): for products with it (plus the summed biases) and with its
    transpose (the input gradient). Each copy is rebuilt when a source changes (an
    optimizer step, a loaded checkpoint: see weights_changed).

    Weights whose storage moves from call to call (ZeRO-3 gathers them for each call)
    would be reordered every time, which costs more than it saves: after a few moves the
    copies are given up and callers fall back to plain F.linear.
    """

    GIVE_UP_AFTER_MOVES = 3

    def __init__(self) -> None:
        self._weight: Optional[torch.Tensor] = None
        self._bias: Optional[torch.Tensor] = None
        self._sources: Optional[Tuple[int, ...]] = None
        self._transposed: Optional[torch.Tensor] = None
        self._transposed_sources: Optional[Tuple[int, ...]] = None
        self._moves = 0

    @property
    def given_up(self) -> bool:
        return self._moves >= self.GIVE_UP_AFTER_MOVES

    def get(
        self, weights: Sequence[torch.Tensor], biases: Sequence[Optional[torch.Tensor]] = ()
    ) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """(reordered weight, summed bias), or None when packing was given up."""
        present = [b for b in biases if b is not None]
        sources = self._check(weights, present, self._sources)
        if self.given_up:
            return None
        if sources != self._sources:
            self._weight = _reorder(_concatenated(weights))
            self._bias = sum(b.detach() for b in present) if present else None
            self._sources = sources
        return self._weight, self._bias

    def get_transposed(self, weights: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
        """A reordered copy of the concatenated weight's transpose (I, O), for dy @ W."""
        sources = self._check(weights, [], self._transposed_sources)
        if self.given_up:
            return None
        if sources != self._transposed_sources:
            self._transposed = _reorder(_concatenated(weights).t())
            self._transposed_sources = sources
        return self._transposed

    def _check(self, weights, biases, previous) -> Tuple[int, ...]:
        """The copies' validity key: the generation and the sources' storage and version;
        counts a move of their storage."""
        sources = (
            _generation,
            *(x for t in (*weights, *biases) for x in (t.data_ptr(), t._version)),
        )
        if previous is not None and sources[1::2] != previous[1::2]:
            self._moves += 1
        return sources

    def __deepcopy__(self, memo) -> "PackedWeight":
        return PackedWeight()  # a copied module packs its own weights when it needs them

    def __getstate__(self):
        return {}  # the reordered copies are rebuilt on demand, never saved

    def __setstate__(self, state) -> None:
        self.__init__()


def _concatenated(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    return weights[0] if len(weights) == 1 else torch.cat(list(weights), dim=1)


class _PackedLinear(torch.autograd.Function):
    """y = x @ cat(weights, 1).T + sum(biases) (+ other), forward and input gradient on
    reordered copies; the weight gradient by torch.mm. x (M, I), other (M, O)."""

    @staticmethod
    def forward(ctx, x, other, found, packed, n_weights, *params):
        weights, biases = params[:n_weights], params[n_weights:]
        weight, bias = found  # packed.get(weights, biases), taken by the caller
        if other is None:
            y = _product(x, weight, bias)
        else:
            y = torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, "add")
        ctx.save_for_backward(x, *weights)
        ctx.packed, ctx.n_biases, ctx.has_other = packed, len(biases), other is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, *weights = ctx.saved_tensors
        dy = dy.contiguous()
        grad_x = None
        if ctx.needs_input_grad[0]:
            transposed = ctx.packed.get_transposed(weights)
            if transposed is None:  # given up since forward: plain product
                grad_x = dy @ _concatenated(weights)
            else:
                grad_x = _product(dy, transposed, None)
        grad_weights = [None] * len(weights)
        if any(ctx.needs_input_grad[5 : 5 + len(weights)]):
            grad_weights = list(torch.mm(dy.t(), x).split([w.size(1) for w in weights], dim=1))
        # one tensor per bias: autograd may adopt a returned gradient as a parameter's .grad
        grad_biases = [dy.sum(0) for _ in range(ctx.n_biases)]
        grad_other = dy if ctx.has_other else None
        return (grad_x, grad_other, None, None, None, *grad_weights, *grad_biases)


def _packed(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[Optional[torch.Tensor]],
    packed: PackedWeight,
    other: Optional[torch.Tensor] = None,
) -> Optional[torch.Tensor]:
    """The product on packed copies, or None where they do not apply (see module doc)."""
    if not packing_applies(x, weights[0]):
        return None
    present = [b for b in biases if b is not None]
    found = packed.get(weights, present)
    if found is None:
        return None
    flat = x.reshape(-1, x.size(-1))
    tensors = (flat, *weights, *present) + (() if other is None else (other,))
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        y = _PackedLinear.apply(flat, other, found, packed, len(weights), *weights, *present)
    elif other is None:
        y = _product(flat, *found)
    else:
        y = torch.ops.mkldnn._linear_pointwise.binary(flat, other, found[0], found[1], "add")
    return y.view(*x.shape[:-1], y.size(-1))


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], packed: PackedWeight
) -> torch.Tensor:
    """F.linear(x, weight, bias), on `packed` copies on CPU. x (..., I), weight (O, I)."""
    y = _packed(x, (weight,), (bias,), packed)
    return F.linear(x, weight, bias) if y is None else y


def linear_of_concatenation(
    inputs: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    biases: Sequence[Optional[torch.Tensor]],
    packed: PackedWeight,
) -> torch.Tensor:
    """sum_i inputs[i] @ weights[i].T + sum(biases): one product over the concatenated
    inputs on `packed` copies on CPU (an LSTM layer's input and hidden state against
    W_ih | W_hh), one addmm per input otherwise. inputs (B, I_i), weights (O, I_i)."""
    x = inputs[0] if len(inputs) == 1 else torch.cat(list(inputs), dim=1)
    y = _packed(x, weights, biases, packed)
    if y is not None:
        return y
    present = [b for b in biases if b is not None]
    out = F.linear(inputs[0], weights[0], sum(present) if present else None)
    for x, w in zip(inputs[1:], weights[1:]):
        out = out.addmm(x, w.t())
    return out


def linear_add(
    x: torch.Tensor, weight: torch.Tensor, other: torch.Tensor, packed: PackedWeight
) -> torch.Tensor:
    """other + x @ weight.T (an LSTM step's recurrent product added to its input
    projection), fused in one call on a `packed` copy on CPU. x (B, I), other (B, O)."""
    y = _packed(x, (weight,), (), packed, other=other)
    return torch.addmm(other, x, weight.t()) if y is None else y


def times_weight(x: torch.Tensor, weight: torch.Tensor, packed: PackedWeight) -> torch.Tensor:
    """x @ weight (the input gradient of a product with weight (O, I)), on a `packed`
    copy of weight.T without autograd on CPU. x (M, O) -> (M, I)."""
    if packing_applies(x, weight) and not torch.is_grad_enabled():
        transposed = packed.get_transposed([weight])
        if transposed is not None:
            return _product(x, transposed, None)
    return x @ weight


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) that multiplies on packed copies of
    its weight on CPU."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.packed = PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.packed)
