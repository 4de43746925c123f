"""Decoding over the decoder's `init_state`/`step` interface: greedy and beam search.

Both decode a whole batch at once. Lengths are bounded per sentence by
a * source_length + b output tokens (EOS excluded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from dist_lstm.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from dist_lstm.model import Seq2Seq
from dist_lstm.model.encoder import EncoderOutput


@dataclass
class Hypothesis:
    """One finished translation: ids without BOS/EOS, its length-normalized score and
    its plain model score (sum of token log-probabilities, EOS included)."""

    tokens: List[int]
    score: float
    log_prob: float


def max_output_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """(B,) longest output (EOS excluded) allowed for each sentence."""
    return (src_lengths.float() * a).long() + b


def length_penalty(length: torch.Tensor | int, alpha: float) -> torch.Tensor | float:
    """GNMT length penalty ((5 + length) / 6) ** alpha; alpha = 0 disables it."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def greedy_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len_a: float,
    max_len_b: int,
    encoded: Optional[EncoderOutput] = None,
) -> List[List[int]]:
    """src (B, S), src_lengths (B,) -> one list of target ids per sentence, EOS excluded.

    `encoded` reuses an encoder pass the caller already made for this batch. Sentences
    that finished leave the batch, so later steps compute only the unfinished rows.
    """
    device, batch = src.device, src.size(0)
    limits = max_output_lengths(src_lengths, max_len_a, max_len_b).to(device)  # (B,)
    state = model.decoder.init_state(
        encoded if encoded is not None else model.encode(src, src_lengths)
    )
    outputs = torch.full((batch, int(limits.max())), PAD_ID, dtype=torch.long, device=device)
    live = torch.arange(batch, device=device)  # (A,) original row of each unfinished sentence
    tokens = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    for t in range(outputs.size(1)):
        log_probs, state = model.decoder.step(tokens, state)  # (A, V)
        tokens = log_probs.argmax(dim=-1)
        outputs[live, t] = tokens
        done = (tokens == EOS_ID) | (t + 1 >= limits[live])  # (A,)
        remaining = (~done).nonzero().squeeze(1)
        if remaining.numel() == 0:
            break
        if remaining.numel() < live.numel():
            live, tokens, state = live[remaining], tokens[remaining], state.select(remaining)
    rows = outputs.tolist()
    return [_until_eos(row[: int(limit)]) for row, limit in zip(rows, limits)]


def _until_eos(tokens: List[int]) -> List[int]:
    return tokens[: tokens.index(EOS_ID)] if EOS_ID in tokens else tokens


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam_size: int,
    max_len_a: float,
    max_len_b: int,
    alpha: float = 0.0,
    min_len: int = 0,
    n_best: int = 1,
    encoded: Optional[EncoderOutput] = None,
) -> List[List[Hypothesis]]:
    """Batched beam search; returns the n_best hypotheses per sentence, best first.

    Each step extends all live hypotheses of all unfinished sentences in one decoder call
    (rows = sentences x beam). A hypothesis ending in EOS among a sentence's top-K
    candidates is finished. A sentence is done, and dropped from the batch, once its
    n_best-th finished score beats the best score any live hypothesis could still reach
    (log-probabilities only fall, so a live score divided by the largest length penalty
    is a bound); stopping at K finished hypotheses instead would miss better, longer ones.
    At a sentence's length limit only EOS may follow. With beam_size=1 and alpha=0 this
    reproduces greedy_search exactly.
    """
    if beam_size < 1 or n_best < 1 or n_best > beam_size:
        raise ValueError(f"need 1 <= n_best ({n_best}) <= beam_size ({beam_size})")
    device, batch, k = src.device, src.size(0), beam_size
    limits = max_output_lengths(src_lengths, max_len_a, max_len_b).to(device)  # (B,)
    state = model.decoder.init_state(
        encoded if encoded is not None else model.encode(src, src_lengths)
    )
    state = state.select(torch.arange(batch, device=device).repeat_interleave(k))
    sentence = torch.arange(batch, device=device)  # (A,) original index of each live sentence
    scores = torch.full((batch, k), float("-inf"), device=device)  # (A, K) summed log-probs
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 0
    history = torch.empty(batch * k, 0, dtype=torch.long, device=device)  # (A*K, t)
    tokens = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    finished: List[List[Hypothesis]] = [[] for _ in range(batch)]
    # (B, n_best) best finished scores per sentence, -inf while fewer than n_best exist.
    kept = torch.full((batch, n_best), float("-inf"), device=device)
    best_reachable_divisor = length_penalty(limits.float() + 1, alpha)  # (B,)

    for t in range(int(limits.max()) + 1):
        live = sentence.numel()
        log_probs, state = model.decoder.step(tokens, state)
        vocab = log_probs.size(-1)
        log_probs = _constrain(log_probs.view(live, k, vocab), t, min_len, t >= limits[sentence])
        candidates = (scores.unsqueeze(2) + log_probs).view(live, k * vocab)
        # 2K candidates hold at least K that do not end in EOS.
        top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)  # (A, 2K)
        origin, token = top_index // vocab, top_index % vocab  # beam of origin, next token
        is_eos = token == EOS_ID
        ends = is_eos[:, :k] & torch.isfinite(top_scores[:, :k])  # (A, K)
        for row, col in ends.nonzero().tolist():  # finished hypotheses, not sentences
            prefix = history[row * k + int(origin[row, col])].tolist()
            total = float(top_scores[row, col])
            hyp = Hypothesis(prefix, total / length_penalty(len(prefix) + 1, alpha), total)
            index = int(sentence[row])
            finished[index].append(hyp)
            if hyp.score > kept[index, -1]:
                kept[index] = torch.sort(
                    torch.cat([kept[index, :-1], kept.new_tensor([hyp.score])]), descending=True
                ).values

        # The best K candidates that do not end continue.
        scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=1)  # (A, K)
        rows = torch.arange(live, device=device).unsqueeze(1) * k + origin.gather(1, pick)
        next_tokens = token.gather(1, pick)  # (A, K)
        reachable = scores[:, 0] / best_reachable_divisor[sentence]  # (A,) scores <= 0
        keep = kept[sentence, -1] < reachable  # (A,) a live hypothesis could still rank
        if not bool(keep.any()):
            break
        rows, next_tokens, scores = rows[keep].view(-1), next_tokens[keep].view(-1), scores[keep]
        sentence = sentence[keep]
        state = state.select(rows)
        history = torch.cat([history[rows], next_tokens.unsqueeze(1)], dim=1)
        tokens = next_tokens

    return [sorted(hyps, key=lambda h: -h.score)[:n_best] for hyps in finished]


def best_hypotheses(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam: int,
    max_len_a: float,
    max_len_b: int,
    alpha: float = 0.0,
    min_len: int = 0,
    encoded: Optional[EncoderOutput] = None,
) -> List[List[int]]:
    """The best output ids per sentence: greedy when beam=1 and min_len=0 (the same result
    as beam search of width 1, faster), beam search otherwise."""
    if beam == 1 and min_len == 0:
        return greedy_search(model, src, src_lengths, max_len_a, max_len_b, encoded)
    hyps = beam_search(
        model, src, src_lengths, beam, max_len_a, max_len_b, alpha, min_len, encoded=encoded
    )
    return [h[0].tokens for h in hyps]


def _constrain(
    log_probs: torch.Tensor, t: int, min_len: int, at_limit: torch.Tensor
) -> torch.Tensor:
    """log_probs (A, K, V): no EOS before min_len; only EOS at the length limit (A,).

    The limit wins over min_len, so every sentence finishes.
    """
    eos = log_probs[:, :, EOS_ID].clone()  # (A, K)
    if t < min_len:
        log_probs[:, :, EOS_ID] = float("-inf")
    if bool(at_limit.any()):
        log_probs[at_limit] = float("-inf")
        log_probs[:, :, EOS_ID] = torch.where(at_limit.unsqueeze(1), eos, log_probs[:, :, EOS_ID])
    return log_probs
