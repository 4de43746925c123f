import pytest
import torch

import dist_lstm.model.loss as loss_module
from dist_lstm.batch import PAD_ID
from dist_lstm.model.loss import linear_cross_entropy
from tests.helpers.models import tiny


def logits_loss(logits, targets, label_smoothing):
    """The reference: cross-entropy summed over the logits of real tokens, and their count."""
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=PAD_ID,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    return loss, int((targets != PAD_ID).sum())


def _reference_and_fused(smoothing, bias):
    torch.manual_seed(1)
    hidden = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, dtype=torch.float64, requires_grad=True) if bias else None
    targets = torch.randint(0, 11, (37,))
    results = []
    for fused in (False, True):
        for t in (hidden, weight, b):
            if t is not None:
                t.grad = None
        if fused:
            loss = linear_cross_entropy(hidden, weight, b, targets, smoothing)
        else:
            logits = torch.nn.functional.linear(hidden, weight, b)
            loss = torch.nn.functional.cross_entropy(
                logits, targets, label_smoothing=smoothing, reduction="sum"
            )
        (3.0 * loss).backward()  # an outer scale, as 1/tokens or a loss scaler applies
        grads = [t.grad.clone() for t in (hidden, weight, b) if t is not None]
        results.append((loss.detach(), grads))
    return results


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_projection_loss_matches_cross_entropy_and_its_gradients(
    monkeypatch, smoothing, bias
):
    monkeypatch.setattr(loss_module, "CHUNK_ELEMENTS", 50)  # several chunks of rows
    (ref_loss, ref_grads), (loss, grads) = _reference_and_fused(smoothing, bias)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_model_loss_equals_logits_loss_and_skips_padding():
    """The training path (fused, real tokens only) equals scoring the logits."""
    for tie in (False, True):
        model = tiny(tie_embeddings=tie)  # vocabularies SRC_V=30, TGT_V=40
        torch.manual_seed(0)
        src = torch.randint(4, 30, (3, 5))
        lengths = torch.tensor([5, 4, 2])
        tgt_in = torch.randint(4, 40, (3, 6))
        tgt_out = torch.randint(4, 40, (3, 6))
        tgt_out[1, 4:] = PAD_ID
        tgt_out[2, 2:] = PAD_ID
        want, want_tokens = logits_loss(model(src, lengths, tgt_in), tgt_out, 0.1)
        want.backward()
        want_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        loss, tokens = model(src, lengths, tgt_in, tgt_out, 0.1)
        loss.backward()
        assert tokens == want_tokens == 12
        torch.testing.assert_close(loss, want)
        for p, g in zip(model.parameters(), want_grads):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
