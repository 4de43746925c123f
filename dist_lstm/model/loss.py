"""Label-smoothed cross-entropy over target tokens, padding excluded.

`linear_cross_entropy` fuses the vocabulary projection with the loss (training and
validation use it): it never holds a whole batch's (tokens, vocab) logits, but computes
each row chunk's gradient while its logits are still in cache, and only for real tokens
(speed and memory in benchmarks/RESULTS.md). The tests check it against
F.cross_entropy over the logits.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 1 << 23  # logits per chunk (32 MB in fp32)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of `hidden @ weight.T + bias` against `targets`.

    hidden (N, H) states of real target tokens only, weight (V, H), bias (V,) or None,
    targets (N,). Equal to F.cross_entropy(..., reduction="sum", label_smoothing=...).
    """
    needs_grad = hidden.requires_grad or weight.requires_grad
    if not (torch.is_grad_enabled() and needs_grad):  # evaluation: no gradients to fuse
        return _loss_only(hidden, weight, bias, targets, label_smoothing)
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, label_smoothing)


def _chunks(rows: int, vocab: int):
    step = max(1, CHUNK_ELEMENTS // max(vocab, 1))
    return ((start, min(start + step, rows)) for start in range(0, rows, step))


def _wide(dtype: torch.dtype) -> torch.dtype:
    """At least fp32 for softmax and sums (bf16/fp16 logits are widened; fp64 stays)."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_log_probs(h, weight, bias) -> torch.Tensor:
    logits = F.linear(h, weight, bias)
    return torch.log_softmax(logits.to(_wide(logits.dtype)), dim=-1)  # (rows, V)


def _chunk_loss(log_probs: torch.Tensor, targets: torch.Tensor, smoothing: float):
    nll = -log_probs.gather(1, targets.unsqueeze(1)).sum()
    if smoothing == 0.0:
        return nll
    uniform = -log_probs.sum() / log_probs.size(1)
    return (1.0 - smoothing) * nll + smoothing * uniform


def _loss_only(hidden, weight, bias, targets, smoothing) -> torch.Tensor:
    total = hidden.new_zeros((), dtype=_wide(hidden.dtype))
    for start, end in _chunks(hidden.size(0), weight.size(0)):
        log_probs = _chunk_log_probs(hidden[start:end], weight, bias)
        total += _chunk_loss(log_probs, targets[start:end], smoothing)
    return total


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, the gradients of hidden, weight and
    bias (d loss / d logits = softmax - smoothed one-hot); backward only scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, smoothing):
        vocab, wide = weight.size(0), _wide(weight.dtype)
        total = hidden.new_zeros((), dtype=_wide(hidden.dtype))
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=wide)
        grad_bias = None if bias is None else torch.zeros_like(bias, dtype=wide)
        for start, end in _chunks(hidden.size(0), vocab):
            h, t = hidden[start:end], targets[start:end]
            log_probs = _chunk_log_probs(h, weight, bias)
            total += _chunk_loss(log_probs, t, smoothing)
            grad = log_probs.exp_()  # softmax, in place: (rows, V)
            if smoothing:
                grad.sub_(smoothing / vocab)
            grad.scatter_add_(1, t.unsqueeze(1), grad.new_full((t.size(0), 1), -(1.0 - smoothing)))
            grad = grad.to(h.dtype)
            grad_hidden[start:end] = grad @ weight.to(h.dtype)
            grad_weight.addmm_(grad.t().to(wide), h.to(wide))
            if grad_bias is not None:
                grad_bias += grad.to(wide).sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        scale = grad_total.to(grad_weight.dtype)
        return (
            grad_hidden * scale.to(grad_hidden.dtype),
            (grad_weight * scale).to(weight_dtype),
            None if grad_bias is None else (grad_bias * scale).to(bias_dtype),
            None,
            None,
        )
