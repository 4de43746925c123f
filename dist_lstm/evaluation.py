"""Validation and test metrics: token-level loss/perplexity and sacreBLEU on decoded text.

BLEU and chrF are computed by sacreBLEU on detokenized hypotheses against the raw reference
sentences (cased, default 13a tokenization), so the numbers are comparable with published
Multi30k results rather than with some private tokenization.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import sacrebleu
import torch
from torch.utils.data import DataLoader

from dist_lstm.data.dataset import Batch
from dist_lstm.data.tokenizer import EOS_ID, PAD_ID, Tokenizer
from dist_lstm.loss import sequence_loss
from dist_lstm.model import Seq2Seq
from dist_lstm.search import greedy_search


@torch.no_grad()
def loss_and_translations(
    model: Seq2Seq,
    loader: DataLoader,
    device: torch.device,
    max_len_a: float,
    max_len_b: int,
) -> tuple[float, int, Dict[int, List[int]]]:
    """One pass over `loader`: summed NLL, token count, and greedy ids by dataset index."""
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    hypotheses: Dict[int, List[int]] = {}
    try:
        for batch in loader:
            batch: Batch = batch.to(device)
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            loss, tokens = sequence_loss(logits, batch.tgt_out)
            total_loss += float(loss)
            total_tokens += tokens
            decoded = greedy_search(model, batch.src, batch.src_lengths, max_len_a, max_len_b)
            hypotheses.update(zip(batch.indices.tolist(), decoded))
    finally:
        model.train(was_training)
    return total_loss, total_tokens, hypotheses


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    """sacreBLEU BLEU and chrF of detokenized hypotheses against raw references."""
    return {
        "bleu": sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score,
        "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score,
    }


def summarize(
    loss_sum: float,
    tokens: int,
    hypotheses: Dict[int, List[int]],
    references: Sequence[str],
    tokenizer: Tokenizer,
    prefix: str = "val",
) -> Dict[str, float]:
    """Metrics dict (loss, ppl, bleu, chrf) from pooled sums and all hypotheses."""
    order = sorted(hypotheses)
    texts = tokenizer.decode("tgt", [hypotheses[i] for i in order])
    scores = corpus_scores(texts, [references[i] for i in order])
    loss = loss_sum / max(tokens, 1)
    return {
        f"{prefix}_loss": loss,
        f"{prefix}_ppl": math.exp(min(loss, 50.0)),
        f"{prefix}_bleu": scores["bleu"],
        f"{prefix}_chrf": scores["chrf"],
    }


@torch.no_grad()
def translate_texts(
    model: Seq2Seq,
    tokenizer: Tokenizer,
    sentences: Sequence[str],
    device: torch.device,
    max_len_a: float,
    max_len_b: int,
    batch_size: int = 64,
) -> List[str]:
    """Greedy translations of raw sentences, in input order.

    Sentences are decoded in length-sorted batches (less padding); an empty line still
    needs one token to encode, so EOS stands in for it.
    """
    model.eval()
    sources = [ids or [EOS_ID] for ids in tokenizer.encode("src", sentences)]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hypotheses: Dict[int, List[int]] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        lengths = torch.tensor([len(sources[i]) for i in rows])
        src = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(sources[i]) for i in rows], batch_first=True, padding_value=PAD_ID
        ).to(device)
        decoded = greedy_search(model, src, lengths, max_len_a, max_len_b)
        hypotheses.update(zip(rows, decoded))
    return tokenizer.decode("tgt", [hypotheses[i] for i in range(len(sources))])
