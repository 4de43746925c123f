"""Decoding over a model's `encode`/`init_state`/`step` interface: greedy and beam search.

Both decode a whole batch at once. Lengths are bounded per sentence by
a * source_length + b output tokens (EOS excluded). The model is a Seq2Seq or an
Ensemble of them (dist_lstm/model/ensemble.py): search only needs `StepwiseModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Protocol, Sequence, Tuple

import torch

from dist_lstm.batch import BOS_ID, EOS_ID, PAD_ID


class SearchState(Protocol):
    """Decoder state with the row operations search applies (DecoderState, EnsembleState)."""

    def select(self, rows: torch.Tensor) -> "SearchState": ...

    def select_hypotheses(
        self, rows: torch.Tensor, sources: Optional[torch.Tensor] = None
    ) -> "SearchState": ...

    @property
    def attention(self) -> Optional[torch.Tensor]:
        """(B, S) attention weights of the step that made this state."""


class StepwiseModel(Protocol):
    """What search calls: a Seq2Seq, or an Ensemble of them."""

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Any: ...

    def init_state(self, encoded: Any) -> SearchState: ...

    def step(
        self, prev_tokens: torch.Tensor, state: SearchState
    ) -> Tuple[torch.Tensor, SearchState]: ...


def _cat_states(states: Sequence[SearchState]) -> SearchState:
    """The rows of several states in one (each state class has its own `cat`)."""
    return type(states[0]).cat(states)


@dataclass
class Hypothesis:
    """One finished translation: ids without BOS/EOS, its length-normalized score and
    its plain model score (sum of token log-probabilities, EOS included)."""

    tokens: List[int]
    score: float
    log_prob: float
    # (len(tokens), source length): the attention each output token was produced with,
    # when the search was asked for it.
    attention: Optional[torch.Tensor] = None


def max_output_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """(B,) longest output (EOS excluded) allowed for each sentence."""
    return (src_lengths.float() * a).long() + b


def length_penalty(length: torch.Tensor | int, alpha: float) -> torch.Tensor | float:
    """GNMT length penalty ((5 + length) / 6) ** alpha; alpha = 0 disables it."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def greedy_search(
    model: StepwiseModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len_a: float,
    max_len_b: int,
    encoded: Optional[Any] = None,
    rows_in_flight: Optional[int] = None,
) -> List[List[int]]:
    """src (B, S), src_lengths (B,) on the host -> one list of target ids per sentence,
    EOS excluded.

    At most `rows_in_flight` sentences (default: all) are decoded at once, taken in the
    given order. A sentence that finishes leaves the batch and, once enough places are
    free, sentences still waiting are encoded and join it: the decoder keeps working on
    full batches instead of finishing each batch's longest sentences alone, where a
    step costs nearly as much as a full one. Every sentence's output is its own greedy
    decoding, whatever it shares the batch with. `encoded` reuses an encoder pass the
    caller already made over all of src.
    """
    device, batch = src.device, src.size(0)
    in_flight = batch if rows_in_flight is None else max(1, min(rows_in_flight, batch))
    refill_at = max(1, in_flight // 8)  # free places worth an encoder call and a state merge
    limits_host = max_output_lengths(src_lengths.cpu(), max_len_a, max_len_b)  # (B,)
    limits = limits_host.to(device)
    outputs = torch.full((batch, int(limits_host.max())), PAD_ID, dtype=torch.long, device=device)
    waiting = _EncodedSentences(model, src, src_lengths, in_flight, encoded)

    live = torch.empty(0, dtype=torch.long, device=device)  # (A,) row in src of each
    position = torch.empty(0, dtype=torch.long, device=device)  # (A,) tokens it has output
    tokens = torch.empty(0, dtype=torch.long, device=device)  # (A,) its last token
    state: Optional[SearchState] = None
    while True:
        free = in_flight - live.numel()
        if waiting.left and (free >= refill_at or live.numel() == 0):
            rows, joining = waiting.take(free)
            state = joining if state is None else _cat_states([state, joining])
            live = torch.cat([live, rows])
            position = torch.cat([position, torch.zeros_like(rows)])
            tokens = torch.cat([tokens, torch.full_like(rows, BOS_ID)])
        log_probs, state = model.step(tokens, state)  # (A, V)
        tokens = log_probs.argmax(dim=-1)
        outputs[live, position] = tokens
        position = position + 1
        done = (tokens == EOS_ID) | (position >= limits[live])  # (A,)
        remaining = (~done).nonzero().squeeze(1)
        if remaining.numel() == 0 and not waiting.left:
            break
        if remaining.numel() < live.numel():
            live, position, tokens = live[remaining], position[remaining], tokens[remaining]
            state = state.select(remaining)
    rows = outputs.tolist()
    return [_until_eos(row[:limit]) for row, limit in zip(rows, limits_host.tolist())]


class _EncodedSentences:
    """The sentences of a greedy search not yet decoding, encoded a chunk at a time."""

    def __init__(
        self,
        model: StepwiseModel,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        chunk: int,
        encoded: Optional[Any],
    ):
        self.model, self.src, self.src_lengths, self.chunk = model, src, src_lengths, chunk
        self.next_row = 0  # first row of src not yet encoded
        self.rows = torch.empty(0, dtype=torch.long, device=src.device)  # encoded, waiting
        self.state: Optional[SearchState] = None
        if encoded is not None:  # the caller encoded everything already
            self.rows = torch.arange(src.size(0), device=src.device)
            self.state = model.init_state(encoded)
            self.next_row = src.size(0)

    @property
    def left(self) -> int:
        return self.rows.numel() + self.src.size(0) - self.next_row

    def take(self, count: int) -> Tuple[torch.Tensor, SearchState]:
        """Up to `count` waiting sentences: their rows in src and initial decoder state."""
        if self.rows.numel() < count and self.next_row < self.src.size(0):
            self._encode_next_chunk()
        taken = min(count, self.rows.numel())
        picked = torch.arange(taken, device=self.rows.device)
        rows, state = self.rows[:taken], self.state.select(picked)
        rest = torch.arange(taken, self.rows.numel(), device=self.rows.device)
        self.rows, self.state = self.rows[taken:], self.state.select(rest)
        return rows, state

    def _encode_next_chunk(self) -> None:
        start, end = self.next_row, min(self.next_row + self.chunk, self.src.size(0))
        lengths = self.src_lengths[start:end]
        src = self.src[start:end, : int(lengths.max())]
        state = self.model.init_state(self.model.encode(src, lengths))
        rows = torch.arange(start, end, device=self.src.device)
        if self.rows.numel():
            state = _cat_states([self.state, state])
            rows = torch.cat([self.rows, rows])
        self.rows, self.state, self.next_row = rows, state, end


def _until_eos(tokens: List[int]) -> List[int]:
    return tokens[: tokens.index(EOS_ID)] if EOS_ID in tokens else tokens


@torch.no_grad()
def beam_search(
    model: StepwiseModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam_size: int,
    max_len_a: float,
    max_len_b: int,
    alpha: float = 0.0,
    encoded: Optional[Any] = None,
    with_attention: bool = False,
) -> List[Hypothesis]:
    """Batched beam search; returns the best hypothesis of each sentence.

    Each step extends all live hypotheses of all unfinished sentences in one decoder call
    (rows = sentences x beam). A hypothesis ending in EOS among a sentence's top-K
    candidates is finished. A sentence is done, and dropped from the batch, once its
    best finished score beats the best score any live hypothesis could still reach
    (log-probabilities only fall, so a live score divided by the largest length penalty
    is a bound); stopping at K finished hypotheses instead would miss better, longer ones.
    At a sentence's length limit only EOS may follow. With beam_size=1 and alpha=0 this
    reproduces greedy_search exactly. `with_attention` also returns, per hypothesis, the
    attention weights of every output token (kept per live hypothesis like its tokens;
    without it nothing of the kind is kept).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be 1 or more, not {beam_size}")
    device, batch, k = src.device, src.size(0), beam_size
    # Host copies of what each step's bookkeeping reads, so a GPU is synchronized a
    # couple of times per step, not once per finished hypothesis.
    src_lengths = src_lengths.cpu()
    limits_host = max_output_lengths(src_lengths, max_len_a, max_len_b)  # (B,)
    limits = limits_host.to(device)
    state = model.init_state(encoded if encoded is not None else model.encode(src, src_lengths))
    # k rows per sentence, sharing its encoder outputs
    state = state.select_hypotheses(torch.arange(batch, device=device).repeat_interleave(k))
    sentence = torch.arange(batch, device=device)  # (A,) original index of each live sentence
    sentence_host = torch.arange(batch)  # the same, on the host
    scores = torch.full((batch, k), float("-inf"), device=device)  # (A, K) summed log-probs
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 0
    history = torch.empty(batch * k, 0, dtype=torch.long, device=device)  # (A*K, t)
    aligned: Optional[torch.Tensor] = None  # (A*K, t, S) attention of each history token
    tokens = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    # Per sentence its best finished hypothesis (the first of equal scores), None before
    # one finishes; the device holds their scores, the bar a live hypothesis must clear.
    best: List[Optional[Hypothesis]] = [None] * batch
    bar = torch.full((batch,), float("-inf"), device=device)  # (B,)
    best_reachable_divisor = length_penalty(limits.float() + 1, alpha)  # (B,)

    for t in range(int(limits_host.max()) + 1):
        live = sentence.numel()
        log_probs, state = model.step(tokens, state)
        if with_attention:
            step_attention = state.attention  # (A*K, S) for the token chosen now
            if aligned is None:
                aligned = step_attention.new_zeros(live * k, 0, step_attention.size(1))
        vocab = log_probs.size(-1)
        any_at_limit = bool((limits_host[sentence_host] <= t).any())  # host only
        log_probs = _constrain(log_probs.view(live, k, vocab), t >= limits[sentence], any_at_limit)
        candidates = (scores.unsqueeze(2) + log_probs).view(live, k * vocab)
        # 2K candidates hold at least K that do not end in EOS.
        top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)  # (A, 2K)
        origin, token = top_index // vocab, top_index % vocab  # beam of origin, next token
        is_eos = token == EOS_ID
        ends = (is_eos[:, :k] & torch.isfinite(top_scores[:, :k])).nonzero()  # (F, 2)
        if ends.numel():  # finished hypotheses (not sentences): copied to the host at once
            end_rows, end_cols = ends[:, 0], ends[:, 1]
            parents = end_rows * k + origin[end_rows, end_cols]  # (F,) rows of history
            owners = sentence_host[end_rows.cpu()].tolist()
            totals = top_scores[end_rows, end_cols].tolist()
            prefixes = history[parents].tolist()
            weights = aligned[parents].float().cpu() if aligned is not None else None
            for number, (index, total, prefix) in enumerate(zip(owners, totals, prefixes)):
                hyp = Hypothesis(prefix, total / length_penalty(len(prefix) + 1, alpha), total)
                if weights is not None:
                    hyp.attention = weights[number, :, : int(src_lengths[index])]
                if best[index] is None or hyp.score > best[index].score:
                    best[index] = hyp
            bar = torch.tensor([_score(hyp) for hyp in best], device=device)

        # The best K candidates that do not end continue.
        scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=1)  # (A, K)
        rows = torch.arange(live, device=device).unsqueeze(1) * k + origin.gather(1, pick)
        next_tokens = token.gather(1, pick)  # (A, K)
        reachable = scores[:, 0] / best_reachable_divisor[sentence]  # (A,) scores <= 0
        keep = bar[sentence] < reachable  # (A,) a live hypothesis could still rank
        survivors = int(keep.sum())
        if survivors == 0:
            break
        dropped = survivors < live
        rows, next_tokens, scores = rows[keep].view(-1), next_tokens[keep].view(-1), scores[keep]
        sentence = sentence[keep]
        if dropped:
            sentence_host = sentence_host[keep.cpu()]
        state = state.select_hypotheses(rows, keep.nonzero().squeeze(1) if dropped else None)
        history = torch.cat([history[rows], next_tokens.unsqueeze(1)], dim=1)
        if aligned is not None:
            aligned = torch.cat([aligned[rows], step_attention[rows].unsqueeze(1)], dim=1)
        tokens = next_tokens

    return best  # every sentence has one: at its length limit only EOS may follow


def _score(hyp: Optional[Hypothesis]) -> float:
    return float("-inf") if hyp is None else hyp.score


def decodes_greedily(beam: int) -> bool:
    """Whether best_hypotheses runs greedy search (the same result as beam 1, faster)."""
    return beam == 1


def best_hypotheses(
    model: StepwiseModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam: int,
    max_len_a: float,
    max_len_b: int,
    alpha: float = 0.0,
    encoded: Optional[Any] = None,
    rows_in_flight: Optional[int] = None,
) -> List[List[int]]:
    """The best output ids per sentence: greedy when beam=1 (the same result as beam search
    of width 1, faster; `rows_in_flight` sentences at a time), beam search otherwise (all
    of src at once)."""
    if decodes_greedily(beam):
        return greedy_search(model, src, src_lengths, max_len_a, max_len_b, encoded, rows_in_flight)
    hyps = beam_search(model, src, src_lengths, beam, max_len_a, max_len_b, alpha, encoded=encoded)
    return [hyp.tokens for hyp in hyps]


def _constrain(log_probs: torch.Tensor, at_limit: torch.Tensor, any_at_limit: bool) -> torch.Tensor:
    """log_probs (A, K, V): only EOS at the length limit (A,), so every sentence finishes;
    `any_at_limit`: whether any sentence is there, known on the host."""
    eos = log_probs[:, :, EOS_ID].clone()  # (A, K)
    if any_at_limit:
        log_probs[at_limit] = float("-inf")
        log_probs[:, :, EOS_ID] = torch.where(at_limit.unsqueeze(1), eos, log_probs[:, :, EOS_ID])
    return log_probs
