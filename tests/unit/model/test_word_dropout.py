"""Word dropout drops whole tokens while training and nothing at evaluation."""

import pytest
import torch

from dist_lstm.batch import PAD_ID
from dist_lstm.checkpoint import load_checkpoint
from dist_lstm.checkpoint.average import average_checkpoints
from dist_lstm.model import build_model
from dist_lstm.model.word_dropout import WordDropout
from tests.helpers.configs import model_config


def test_training_zeroes_whole_tokens_and_scales_the_rest():
    torch.manual_seed(0)
    layer = WordDropout(0.5).train()
    embedded = torch.randn(8, 50, 6) + 3.0  # (B, T, E), no zero entries
    dropped = layer(embedded)
    zeroed = (dropped == 0).all(dim=-1)  # (B, T)
    kept = ~zeroed
    assert (dropped == 0).any(dim=-1).eq(zeroed).all()  # a token goes whole or not at all
    assert 0.35 < zeroed.float().mean() < 0.65
    assert torch.allclose(dropped[kept], embedded[kept] * 2.0)


def test_evaluation_and_zero_rate_change_nothing():
    embedded = torch.randn(2, 5, 4)
    assert torch.equal(WordDropout(0.5).eval()(embedded), embedded)
    assert torch.equal(WordDropout(0.0).train()(embedded), embedded)
    with pytest.raises(ValueError, match="word dropout"):
        WordDropout(1.0)


def test_model_trains_with_word_dropout_and_evaluates_deterministically():
    cfg = model_config(emb_dim=8, hidden_size=8, word_dropout=0.3, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(cfg, 20, 20, PAD_ID)
    src = torch.randint(3, 20, (4, 7))
    lengths = torch.full((4,), 7)
    tgt = torch.randint(3, 20, (4, 6))
    model.train()
    torch.manual_seed(1)
    first = model(src, lengths, tgt)
    torch.manual_seed(2)
    assert not torch.equal(first, model(src, lengths, tgt))  # different tokens dropped
    model.eval()
    assert torch.equal(model(src, lengths, tgt), model(src, lengths, tgt))


def test_checkpoints_saved_before_the_key_load_with_it_filled_in(tmp_path):
    """Loading fills model.word_dropout into an older checkpoint's config, so building,
    averaging and resuming (tests/integration/test_resume.py) all accept it."""
    cfg = dict(model_config())
    model = build_model(cfg, 20, 20, PAD_ID)
    old_cfg = {k: v for k, v in cfg.items() if k != "word_dropout"}
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"
    torch.save({"model": model.state_dict(), "config": {"model": old_cfg}}, old)
    torch.save({"model": model.state_dict(), "config": {"model": cfg}}, new)
    loaded = load_checkpoint(old)
    assert loaded["config"]["model"] == cfg  # word_dropout 0.0, what it was trained with
    rebuilt = build_model(loaded["config"]["model"], 20, 20, PAD_ID)
    assert rebuilt.encoder.word_dropout.p == 0.0 and rebuilt.decoder.word_dropout.p == 0.0
    assert average_checkpoints([old, new])["config"]["model"] == cfg  # same model after all
