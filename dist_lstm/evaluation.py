"""Validation and test metrics: token-level loss/perplexity and sacreBLEU on decoded text.

BLEU and chrF are computed by sacreBLEU on detokenized hypotheses against the raw reference
sentences (cased, default 13a tokenization), so the numbers are comparable with published
Multi30k results rather than with some private tokenization.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from sacrebleu.metrics import BLEU, CHRF
from torch.utils.data import DataLoader

from dist_lstm.batch import Batch
from dist_lstm.config.choices import MONITOR_MODES
from dist_lstm.data.tokenizer import Tokenizer
from dist_lstm.model import Seq2Seq
from dist_lstm.translate.search import best_hypotheses


def monitor_mode(metric: str) -> str:
    """"max" when a higher `metric` is better, "min" otherwise."""
    return MONITOR_MODES[metric]


@torch.no_grad()
def loss_and_translations(
    model: Seq2Seq,
    loader: DataLoader,
    device: torch.device,
    max_len_a: float,
    max_len_b: int,
    beam: int = 1,
) -> tuple[float, int, Dict[int, List[int]]]:
    """One pass over `loader`: summed NLL, token count, and decoded ids by dataset index
    (greedy for beam=1, else beam search)."""
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    hypotheses: Dict[int, List[int]] = {}
    try:
        for batch in loader:
            batch: Batch = batch.to(device)
            encoded = model.encode(batch.src, batch.src_lengths)  # shared by loss and search
            loss, tokens = model.decoder(
                batch.tgt_in, encoded, batch.tgt_out, tgt_positions=batch.tgt_positions
            )
            total_loss += float(loss)
            total_tokens += tokens
            decoded = best_hypotheses(
                model, batch.src, batch.src_lengths, beam, max_len_a, max_len_b, encoded=encoded
            )
            hypotheses.update(zip(batch.indices.tolist(), decoded))
    finally:
        model.train(was_training)
    return total_loss, total_tokens, hypotheses


def sacrebleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> Dict[str, Any]:
    """sacreBLEU BLEU and chrF (defaults: cased, 13a) with their signatures."""
    bleu, chrf = BLEU(), CHRF()
    hyps, refs = list(hypotheses), [list(references)]
    return {
        "bleu": bleu.corpus_score(hyps, refs).score,
        "chrf": chrf.corpus_score(hyps, refs).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
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
    scores = sacrebleu_scores(texts, [references[i] for i in order])
    loss = loss_sum / max(tokens, 1)
    return {
        f"{prefix}_loss": loss,
        f"{prefix}_ppl": math.exp(min(loss, 50.0)),
        f"{prefix}_bleu": scores["bleu"],
        f"{prefix}_chrf": scores["chrf"],
    }


def validation_metrics(
    model: Seq2Seq,
    loader: DataLoader,
    device: torch.device,
    search: Dict[str, Any],
    references: Sequence[str],
    tokenizer: Tokenizer,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor],
    gather_objects: Callable[[Any], List[Any]],
) -> Tuple[Dict[str, float], Dict[int, List[int]]]:
    """Validate this rank's share of `loader`, then pool: losses summed over ranks,
    hypotheses gathered from every rank and scored together in dataset order.
    search: max_len_a, max_len_b, beam. Returns the metrics and the hypotheses by index."""
    loss_sum, tokens, hyps = loss_and_translations(model, loader, device, **search)
    sums = all_reduce_sum(torch.tensor([loss_sum, tokens], dtype=torch.float64))
    merged: Dict[int, List[int]] = {}
    for part in gather_objects(hyps):
        merged.update(part)
    return summarize(float(sums[0]), int(sums[1]), merged, references, tokenizer), merged
