"""Search's matrix products on CPU through oneDNN, on copies of the weights reordered once.

Why: search (no autograd) multiplies the same weights hundreds of times per batch, and
oneDNN on a weight already in its blocked layout beat torch's default CPU matmul (MKL) on
the benchmarks' machine (figures in benchmarks/RESULTS.md). Training keeps F.linear: its
weights change every step and autograd needs their gradients. Under CPU autocast to bf16
the copies are bf16, as autocast would have cast the weights for F.linear.

Each model owns its copies and their invalidation (track_weight_changes): a copy is
rebuilt lazily after the model's weights change.
"""

from __future__ import annotations

import weakref
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook


def _onednn_linear_available() -> bool:
    """oneDNN and its (inductor-facing) ops for linear on a reordered weight are in this
    torch build."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight
        torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return False
    return True


ONEDNN_LINEAR = _onednn_linear_available()


def reordered_dtype(x: torch.Tensor, weight: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype `x @ weight.T` runs in on a reordered copy, or None where it must run
    through F.linear: a copy needs a CPU, no autograd and an fp32 weight; the product is
    fp32, or bf16 inside CPU autocast to bf16 (other autocast dtypes keep F.linear,
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


class ReorderedWeight:
    """A oneDNN-reordered copy of one weight (O, I), or of several concatenated along
    their inputs (O, I1 + I2 + ...), with their summed biases.

    Rebuilt when a source's storage or version counter changes, or after `invalidate()`:
    fused optimizers (AdamW with fused=True) update weights in place without bumping
    version counters, so the owning model invalidates its copies itself
    (track_weight_changes).

    Weights whose storage moves from call to call (ZeRO-3 gathers them for each call)
    would be reordered every time, which costs more than it saves: after a few moves the
    copy is given up and callers fall back to plain F.linear.
    """

    GIVE_UP_AFTER_MOVES = 3

    def __init__(self) -> None:
        self._key: Optional[tuple] = None  # what the copy was made from; None: no copy
        self._weight: Optional[torch.Tensor] = None
        self._bias: Optional[torch.Tensor] = None
        self._pointers: Optional[tuple] = None  # kept across invalidation, to count moves
        self._moves = 0

    def invalidate(self) -> None:
        """Drop the copy (freeing its memory); the next search call rebuilds it."""
        self._key = self._weight = self._bias = None

    def get(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[Optional[torch.Tensor]] = (),
        dtype: torch.dtype = torch.float32,
    ) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """(reordered weight, summed bias) in `dtype`, or None when the copy was given up."""
        if self._moves >= self.GIVE_UP_AFTER_MOVES:
            return None
        present = [b for b in biases if b is not None]
        tensors = (*weights, *present)
        pointers = tuple(t.data_ptr() for t in tensors)
        key = (dtype, pointers, tuple(t._version for t in tensors))
        if key != self._key:
            if self._pointers is not None and pointers != self._pointers:
                self._moves += 1
            weight = weights[0] if len(weights) == 1 else torch.cat(list(weights), dim=1)
            self._weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype))
            self._bias = sum(b.detach() for b in present).to(dtype) if present else None
            self._key, self._pointers = key, pointers
        return self._weight, self._bias

    def __deepcopy__(self, memo) -> "ReorderedWeight":
        return ReorderedWeight()  # a copied module reorders its own weights when it needs them

    def __getstate__(self):
        return {}  # the reordered copy is rebuilt on demand, never saved

    def __setstate__(self, state) -> None:
        self.__init__()


def reordered_weights(module: nn.Module):
    """Every ReorderedWeight held by `module` or its submodules, as an attribute or in a
    list or tuple attribute."""
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, ReorderedWeight):
                yield value
            elif isinstance(value, (list, tuple)):
                yield from (v for v in value if isinstance(v, ReorderedWeight))


def invalidate_reordered_weights(module: nn.Module) -> None:
    """Drop every reordered copy in `module`: they are rebuilt at their next use."""
    for reordered in reordered_weights(module):
        reordered.invalidate()


def _invalidate_after_load(module: nn.Module, incompatible_keys) -> None:
    """load_state_dict post-hook. A module-level function, not a closure: a deep copy of
    the model keeps this same hook, which then receives the copy."""
    invalidate_reordered_weights(module)


def track_weight_changes(model: nn.Module) -> None:
    """Make `model` drop its reordered copies after each `model.load_state_dict` (where
    DCP's set_state_dict and DeepSpeed's load_checkpoint end) and after any torch
    optimizer's step (fused ones do not bump version counters).

    Call once per model object, at construction and again on a deep copy or unpickled
    copy (hooks on the optimizer side are not copied with it). The optimizer hook is
    global, so any optimizer's step invalidates every tracked model: a spare rebuild at
    worst. It holds the model weakly and is removed when the model is collected.
    """
    if _invalidate_after_load not in model._load_state_dict_post_hooks.values():
        model.register_load_state_dict_post_hook(_invalidate_after_load)
    model_ref = weakref.ref(model)

    def after_optimizer_step(optimizer, args, kwargs) -> None:
        tracked = model_ref()
        if tracked is not None:
            invalidate_reordered_weights(tracked)

    handle = register_optimizer_step_post_hook(after_optimizer_step)
    weakref.finalize(model, handle.remove)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    reordered: ReorderedWeight,
) -> torch.Tensor:
    """F.linear(x, weight, bias), through the `reordered` copy in CPU search."""
    dtype = reordered_dtype(x, weight)
    if dtype is not None:
        found = reordered.get([weight], [bias], dtype)
        if found is not None:
            return _reordered_product(x.to(dtype), *found)
    return F.linear(x, weight, bias)


def linear_of_concatenation(
    inputs: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    biases: Sequence[Optional[torch.Tensor]],
    reordered: ReorderedWeight,
) -> torch.Tensor:
    """sum_i inputs[i] @ weights[i].T + sum(biases): one product over the concatenated
    inputs in CPU search (an LSTM layer's input and hidden state against W_ih | W_hh),
    one product per input otherwise. inputs (B, I_i), weights (O, I_i) -> (B, O)."""
    dtype = reordered_dtype(inputs[0], weights[0])
    if dtype is not None:
        found = reordered.get(weights, biases, dtype)
        if found is not None:
            return _reordered_product(torch.cat([x.to(dtype) for x in inputs], dim=1), *found)
    present = [b for b in biases if b is not None]
    out = F.linear(inputs[0], weights[0], sum(present) if present else None)
    for x, w in zip(inputs[1:], weights[1:]):
        out = torch.addmm(out, x, w.t())  # not addmm_: autocast casts only out-of-place ops
    return out


def _reordered_product(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """x (..., I) @ reordered weight + bias -> (..., O), all in the copy's dtype."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) that multiplies through a
    reordered copy of its weight in CPU search."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reordered = ReorderedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.reordered)
