"""An ensemble searched as one model: log-probabilities averaged at every step."""

import pytest
import torch

from dist_lstm.model import Ensemble
from dist_lstm.translate.search import beam_search, greedy_search
from tests.helpers.models import SRC, padded, sequence_log_prob, source_dependent_model, tiny


def test_an_ensemble_of_one_decodes_exactly_like_its_model():
    model, sources = source_dependent_model(6)
    src, lengths = padded(sources)
    alone, ensemble = model, Ensemble([model]).eval()
    assert greedy_search(ensemble, src, lengths, 2.0, 4, rows_in_flight=2) == greedy_search(
        alone, src, lengths, 2.0, 4, rows_in_flight=2
    )
    for single, together in zip(
        beam_search(alone, src, lengths, 3, 2.0, 4, alpha=0.6),
        beam_search(ensemble, src, lengths, 3, 2.0, 4, alpha=0.6),
    ):
        assert together.tokens == single.tokens and together.score == single.score


def test_two_models_score_each_hypothesis_by_their_mean_log_probability():
    """Both models run in one search: the hypothesis it returns carries the mean of what
    each model alone gives its tokens (EOS included), whatever their architectures."""
    first, _ = source_dependent_model(1, attention="dot")
    second, _ = source_dependent_model(1, attention="bahdanau", input_feeding=False)
    ensemble = Ensemble([first, second]).eval()
    gaps = []
    for source in SRC:
        src, lengths = padded([source])
        hyp = beam_search(ensemble, src, lengths, 3, 2.0, 4)[0]
        a = sequence_log_prob(first, src, lengths, hyp.tokens)
        b = sequence_log_prob(second, src, lengths, hyp.tokens)
        assert hyp.log_prob == pytest.approx((a + b) / 2, abs=1e-4)
        gaps.append(abs(a - b))
    assert max(gaps) > 0.1, "the two models must disagree for the mean to show"


def test_greedy_refilling_works_for_an_ensemble():
    model, sources = source_dependent_model(7)
    other = tiny(attention="dot")
    src, lengths = padded(sources)
    ensemble = Ensemble([model, other]).eval()
    alone = [greedy_search(ensemble, *padded([s]), 2.0, 4)[0] for s in sources]
    assert greedy_search(ensemble, src, lengths, 2.0, 4, rows_in_flight=2) == alone


def test_models_with_different_target_vocabularies_are_refused():
    with pytest.raises(ValueError, match="target vocabularies differ"):
        Ensemble([tiny(), _with_target_vocab(24)])


def _with_target_vocab(size):
    from dist_lstm.batch import PAD_ID
    from dist_lstm.model import build_model
    from tests.helpers.configs import model_config

    torch.manual_seed(0)
    return build_model(model_config(emb_dim=12, hidden_size=16), 30, size, PAD_ID)
