"""Model behaviour that translation quality silently depends on: padding must not matter."""

import pytest
import torch

from dist_lstm.batch import PAD_ID
from dist_lstm.model.attention import Attention
from dist_lstm.model.encoder import Encoder
from tests.helpers.models import SRC, SRC_V, TGT_V, padded, tiny

TGT = [[2, 7, 8, 9], [2, 10], [2, 5, 6, 7, 8, 9]]


@pytest.mark.parametrize("attention", ["dot", "general", "bahdanau"])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_logits_shape(attention, input_feeding):
    model = tiny(attention=attention, input_feeding=input_feeding)
    src, lengths = padded(SRC)
    tgt, _ = padded(TGT)
    assert model(src, lengths, tgt).shape == (3, tgt.size(1), TGT_V)


@pytest.mark.parametrize("attention", ["dot", "general", "bahdanau"])
@pytest.mark.parametrize("tie", [False, True])
def test_padding_does_not_change_outputs(attention, tie):
    """Each sentence's logits in a padded batch equal its logits alone."""
    model = tiny(attention=attention, tie_embeddings=tie)
    src, lengths = padded(SRC)
    tgt, _ = padded(TGT)
    batch_logits = model(src, lengths, tgt)
    for i in range(len(SRC)):
        alone = model(torch.tensor([SRC[i]]), torch.tensor([len(SRC[i])]), torch.tensor([TGT[i]]))
        torch.testing.assert_close(batch_logits[i, : len(TGT[i])], alone[0], rtol=1e-5, atol=1e-5)


def test_packed_encoder_final_states_ignore_padding():
    torch.manual_seed(0)
    enc = Encoder(
        SRC_V, 8, 10, num_layers=2, bidirectional=True, dropout=0.0, padding_idx=PAD_ID
    ).eval()
    src, lengths = padded(SRC)
    out = enc(src, lengths)
    for i, seq in enumerate(SRC):
        alone = enc(torch.tensor([seq]), torch.tensor([len(seq)]))
        torch.testing.assert_close(out.final[0][i], alone.final[0][0])
        torch.testing.assert_close(out.final[1][i], alone.final[1][0])
        torch.testing.assert_close(out.memory[i, : len(seq)], alone.memory[0])
        assert torch.all(out.memory[i, len(seq) :] == 0)
    assert out.mask.tolist() == (src != PAD_ID).tolist()


@pytest.mark.parametrize("kind", ["dot", "general", "bahdanau"])
def test_attention_weights_sum_to_one_and_skip_padding(kind):
    torch.manual_seed(0)
    att = Attention(kind, 6, 6)
    memory = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    query = torch.randn(3, 4, 6)
    context, weights = att(query, att.precompute(memory), memory, mask)
    assert context.shape == (3, 4, 6) and weights.shape == (3, 4, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    assert torch.all(weights.masked_select(~mask.unsqueeze(1).expand_as(weights)) == 0)
    # Changing memory under the padding changes nothing.
    noisy = memory.clone()
    noisy[~mask] = 100.0
    context2, _ = att(query, att.precompute(noisy), noisy, mask)
    torch.testing.assert_close(context, context2)


def test_dot_attention_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="dot attention"):
        Attention("dot", 8, 6)


@pytest.mark.parametrize("input_feeding", [True, False])
def test_step_by_step_decoding_matches_teacher_forcing(input_feeding):
    """Search uses `step` without gradients (on CPU: packed oneDNN products); training
    uses `forward`: they must score identically."""
    model = tiny(input_feeding=input_feeding, attention="bahdanau")
    src, lengths = padded(SRC)
    tgt, _ = padded(TGT)
    forward_logp = torch.log_softmax(model(src, lengths, tgt), dim=-1)
    with torch.no_grad():
        state = model.decoder.init_state(model.encode(src, lengths))
        for t in range(tgt.size(1)):
            logp, state = model.decoder.step(tgt[:, t], state)
            torch.testing.assert_close(logp, forward_logp[:, t], rtol=1e-5, atol=1e-5)


def test_state_select_reorders_rows():
    model = tiny()
    src, lengths = padded(SRC)
    state = model.decoder.init_state(model.encode(src, lengths))
    picked = state.select(torch.tensor([2, 0, 0]))
    torch.testing.assert_close(picked.h[:, 1], state.h[:, 0])
    torch.testing.assert_close(picked.memory[0], state.memory[2])


def test_tied_embeddings_share_the_matrix():
    model = tiny(tie_embeddings=True)
    names = {n for n, _ in model.named_parameters()}
    assert "decoder.output.weight" not in names
    assert model.decoder.embedding.weight.shape == (TGT_V, 12)


def test_model_code_knows_nothing_of_distribution():
    from pathlib import Path

    import dist_lstm.model as pkg

    for path in Path(pkg.__file__).parent.rglob("*.py"):  # model/cpu/ too
        text = path.read_text()
        for word in ("torch.distributed", "RANK", "deepspeed", "torch.save"):
            assert word not in text, f"{path.name} mentions {word}"
