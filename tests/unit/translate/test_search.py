"""Greedy and beam search over the decoder's step interface."""

import math

import pytest
import torch

from dist_lstm.batch import EOS_ID
from dist_lstm.translate.search import beam_search, greedy_search, length_penalty
from tests.helpers.models import SRC, padded, sequence_log_prob, source_dependent_model, tiny


@pytest.mark.parametrize("input_feeding", [True, False])
@pytest.mark.parametrize("limits", [(1.5, 3), (0.0, 1), (2.0, 8)])
def test_beam_one_is_greedy(input_feeding, limits):
    model = tiny(input_feeding=input_feeding)
    src, lengths = padded(SRC)
    greedy = greedy_search(model, src, lengths, *limits)
    beam = beam_search(model, src, lengths, 1, *limits)
    assert [h.tokens for h in beam] == greedy


def test_outputs_respect_the_length_limit():
    model = tiny()
    src, lengths = padded(SRC)
    for hyp, n in zip(beam_search(model, src, lengths, 4, 1.0, 2), lengths.tolist()):
        assert len(hyp.tokens) <= n + 2


def test_log_prob_is_the_model_score_of_the_tokens():
    model = tiny()
    src, lengths = padded(SRC[:1])
    hyp = beam_search(model, src, lengths, 3, 1.5, 4)[0]
    assert hyp.log_prob == pytest.approx(
        sequence_log_prob(model, src, lengths, hyp.tokens), abs=1e-4
    )


class ScriptedModel:
    """A model whose next-token distribution depends only on the previous token."""

    def __init__(self, table, vocab=8):
        self.table, self.vocab = table, vocab

    def encode(self, src, lengths):
        return src.size(0)  # the script only needs the batch size

    def init_state(self, enc):
        return ScriptedState(torch.zeros(enc, dtype=torch.long))

    def step(self, prev, state):
        logp = torch.full((prev.numel(), self.vocab), -1e9)
        for row, token in enumerate(prev.tolist()):
            for nxt, p in self.table.get(token, {EOS_ID: 1.0}).items():
                logp[row, nxt] = math.log(p)
        return logp, state


class ScriptedState:
    def __init__(self, rows):
        self.rows = rows

    def select_hypotheses(self, rows, sources=None):
        return ScriptedState(self.rows[rows])


def test_length_penalty_changes_the_ranking():
    # From BOS: EOS at once (0.45) or token 5 (0.55) then EOS (0.8).
    # Plain scores: log .45 = -0.80 beats log .55 + log .8 = -0.82 (short wins).
    # With alpha=1 the long one is divided by 7/6 and wins: -0.70 > -0.80.
    model = ScriptedModel({2: {EOS_ID: 0.45, 5: 0.55}, 5: {EOS_ID: 0.8, 6: 0.2}})
    src, lengths = torch.ones(1, 3, dtype=torch.long), torch.tensor([3])
    plain = beam_search(model, src, lengths, 2, 2.0, 2, alpha=0.0)[0]
    penalized = beam_search(model, src, lengths, 2, 2.0, 2, alpha=1.0)[0]
    assert plain.tokens == []
    assert penalized.tokens == [5]
    assert penalized.score == pytest.approx(
        (math.log(0.55) + math.log(0.8)) / length_penalty(2, 1.0)
    )


def test_invalid_beam_arguments():
    model = tiny()
    src, lengths = padded(SRC)
    with pytest.raises(ValueError, match="beam_size must be 1 or more"):
        beam_search(model, src, lengths, 0, 1.5, 3)


def test_reusing_an_encoder_pass_gives_the_same_output():
    from dist_lstm.translate.search import best_hypotheses

    model = tiny()
    src, lengths = padded(SRC)
    encoded = model.encode(src, lengths)
    for beam in (1, 3):
        fresh = best_hypotheses(model, src, lengths, beam, 1.5, 4)
        assert best_hypotheses(model, src, lengths, beam, 1.5, 4, encoded=encoded) == fresh


@pytest.mark.parametrize("input_feeding", [True, False])
def test_greedy_refilling_a_running_batch_gives_each_sentence_its_own_decoding(input_feeding):
    """With fewer rows in flight than sentences, finished sentences are replaced by
    waiting ones (other source lengths, so attention memory is re-padded); each output
    must still be what that sentence decodes to alone."""
    model, sources = source_dependent_model(9, input_feeding=input_feeding)
    src, lengths = padded(sources)
    alone = [greedy_search(model, *padded([s]), 2.0, 4)[0] for s in sources]
    assert len({len(out) for out in alone}) > 2, "needs outputs of several lengths"
    for rows_in_flight in (1, 2, 3, 9):
        assert greedy_search(model, src, lengths, 2.0, 4, rows_in_flight=rows_in_flight) == alone


@pytest.mark.parametrize("attention", ["dot", "general", "bahdanau"])
def test_beam_search_of_a_batch_equals_each_sentence_alone(attention):
    """Hypotheses share their sentence's encoder outputs (stored once per sentence) while
    sentences finish and leave the batch at different steps."""
    model, sources = source_dependent_model(5, attention=attention)
    batch = beam_search(model, *padded(sources), 3, 2.0, 4)
    for source, hyp in zip(sources, batch):
        alone = beam_search(model, *padded([source]), 3, 2.0, 4)[0]
        assert hyp.tokens == alone.tokens
        assert hyp.score == pytest.approx(alone.score, abs=1e-5)


@pytest.mark.parametrize("input_feeding", [True, False])
def test_beam_search_returns_the_attention_each_token_was_produced_with(input_feeding):
    """The kept attention rows follow their hypotheses through reordering and pruning:
    replaying a hypothesis's tokens alone gives the same weights, and asking for them
    changes nothing else."""
    model, sources = source_dependent_model(5, input_feeding=input_feeding)
    src, lengths = padded(sources)
    plain = beam_search(model, src, lengths, 3, 2.0, 4)
    found = beam_search(model, src, lengths, 3, 2.0, 4, with_attention=True)
    for source, hyp, without in zip(sources, found, plain):
        assert hyp.tokens == without.tokens
        assert hyp.attention.shape == (len(hyp.tokens), len(source))
        one, length = padded([source])
        with torch.no_grad():
            state = model.init_state(model.encode(one, length))
            prev = torch.tensor([2])
            for t, token in enumerate(hyp.tokens):
                _, state = model.step(prev, state)
                torch.testing.assert_close(hyp.attention[t], state.attention[0], atol=1e-5, rtol=0)
                prev = torch.tensor([token])
