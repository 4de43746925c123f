"""Validation metrics: which way each metric is better, sacreBLEU scoring, hypotheses
lined up with their references by dataset index, and the evaluation pass itself."""

import math

import pytest
import sacrebleu
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dist_lstm.batch import PAD_ID
from dist_lstm.data.build import collate
from dist_lstm.evaluation import (
    loss_and_translations,
    monitor_mode,
    sacrebleu_scores,
    summarize,
)
from dist_lstm.model import build_model
from dist_lstm.translate.search import greedy_search
from tests.helpers.configs import model_config

CPU = torch.device("cpu")


def test_monitor_mode_says_which_way_each_metric_improves():
    assert [monitor_mode(m) for m in ("val_bleu", "val_chrf", "val_loss", "val_ppl")] == [
        "max",
        "max",
        "min",
        "min",
    ]


HYPOTHESES = ["The cat sat on the mat .", "A dog runs in the park!", "Hello world , again"]
REFERENCES = ["The cat sat on a mat .", "A dog is running in the park!", "hello world, again"]


def test_sacrebleu_scores_are_sacrebleus_own_corpus_scores_with_signatures():
    """Cased, 13a-tokenized corpus BLEU and chrF, as published results report them."""
    scores = sacrebleu_scores(HYPOTHESES, REFERENCES)
    assert scores["bleu"] == sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100
    for part in ("nrefs:1", "case:mixed", "tok:13a", f"version:{sacrebleu.__version__}"):
        assert part in scores["bleu_signature"], part
    assert f"version:{sacrebleu.__version__}" in scores["chrf_signature"]


class WordTokenizer:
    """Decodes ids as indices into a word list; records the roles it was asked for."""

    def __init__(self, words):
        self.words, self.roles = words, []

    def decode(self, role, ids_list):
        self.roles.append(role)
        return [" ".join(self.words[i] for i in ids) for ids in ids_list]


WORDS = "the cat sat on mat a dog ran in park birds sing at dawn".split()
SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn"]


def ids_of(sentence):
    return [WORDS.index(w) for w in sentence.split()]


def test_summarize_scores_each_hypothesis_against_its_own_reference():
    """Hypotheses arrive by rank and batch, not in dataset order: inserted 2, 0, 1 here,
    each exactly its reference, so any other pairing would fall well below BLEU 100."""
    hypotheses = {i: ids_of(SENTENCES[i]) for i in (2, 0, 1)}
    tokenizer = WordTokenizer(WORDS)
    metrics = summarize(6.0, 3, hypotheses, SENTENCES, tokenizer)
    assert metrics["val_bleu"] == pytest.approx(100.0)
    assert metrics["val_chrf"] == pytest.approx(100.0)
    assert tokenizer.roles == ["tgt"]


def test_summarize_computes_loss_and_perplexity_from_the_sums():
    hypotheses = {0: ids_of(SENTENCES[0])}
    metrics = summarize(6.0, 4, hypotheses, SENTENCES, WordTokenizer(WORDS), prefix="test")
    assert set(metrics) == {"test_loss", "test_ppl", "test_bleu", "test_chrf"}
    assert metrics["test_loss"] == 1.5 and metrics["test_ppl"] == pytest.approx(math.exp(1.5))
    # an untrained model's huge loss gives a finite perplexity, not an overflow
    huge = summarize(1e6, 10, hypotheses, SENTENCES, WordTokenizer(WORDS))
    assert huge["val_ppl"] == pytest.approx(math.exp(50.0))


SRC = [[5, 6, 7, 8], [4, 9], [10, 11, 12], [6, 5]]
TGT = [[7, 8, 9], [4, 5, 6, 7], [8], [9, 10]]


def tiny_model():
    torch.manual_seed(0)
    # dropout: a pass left in training mode would change every number below
    cfg = model_config(dropout=0.5)
    return build_model(cfg, 14, 14, PAD_ID)


def expected_pass(model):
    """Summed loss, token count and greedy output per sentence, each sentence alone in
    eval mode, with the plain logits and cross-entropy instead of the fused loss."""
    model.eval()
    loss, tokens, hypotheses = 0.0, 0, {}
    with torch.no_grad():
        for i in range(len(SRC)):
            batch = collate([(i, SRC[i], TGT[i])])
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            loss += float(F.cross_entropy(logits[0], batch.tgt_out[0], reduction="sum"))
            tokens += len(TGT[i]) + 1  # EOS included
            hypotheses[i] = greedy_search(model, batch.src, batch.src_lengths, 1.0, 3)[0]
    return loss, tokens, hypotheses


@pytest.mark.parametrize("training", [True, False])
def test_loss_and_translations_over_two_batches(training):
    model = tiny_model()
    expected_loss, expected_tokens, expected_hyps = expected_pass(model)
    pairs = [(i, s, t) for i, (s, t) in enumerate(zip(SRC, TGT))]  # (index, src, tgt)
    loader = DataLoader(pairs, batch_sampler=[[3, 1], [0, 2]], collate_fn=collate)
    model.train(training)
    loss, tokens, hypotheses = loss_and_translations(model, loader, CPU, 1.0, 3)
    assert model.training is training  # the caller's mode is back
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert tokens == expected_tokens
    assert hypotheses == expected_hyps  # keyed by dataset index, one each
    assert any(hypotheses.values())  # not trivially all empty


def test_the_training_mode_is_restored_when_the_pass_fails():
    def failing_loader():
        yield collate([(0, SRC[0], TGT[0])])
        raise RuntimeError("data worker died")

    model = tiny_model().train()
    with pytest.raises(RuntimeError, match="data worker died"):
        loss_and_translations(model, failing_loader(), CPU, 1.0, 3)
    assert model.training
