import torch

from dist_lstm.data.tokenizer import PAD_ID
from dist_lstm.loss import sequence_loss


def test_loss_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    targets = torch.tensor([[4, 5, 6], [4, 5, 6]])
    base, n = sequence_loss(logits, targets, 0.1)
    # Add padded positions with arbitrary logits: the sum and the count do not move.
    padded_logits = torch.cat([logits, 50 * torch.randn(2, 2, 7)], dim=1)
    padded_targets = torch.cat([targets, torch.full((2, 2), PAD_ID)], dim=1)
    loss, count = sequence_loss(padded_logits, padded_targets, 0.1)
    assert count == n == 6
    torch.testing.assert_close(loss, base)


def test_label_smoothing_changes_loss_and_zero_is_plain_nll():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 9)
    targets = torch.tensor([[4, 5, 6, PAD_ID]])
    nll, n = sequence_loss(logits, targets, 0.0)
    expected = -torch.log_softmax(logits, -1)[0, torch.arange(3), targets[0, :3]].sum()
    torch.testing.assert_close(nll, expected)
    smoothed, _ = sequence_loss(logits, targets, 0.2)
    assert n == 3 and not torch.isclose(nll, smoothed)
