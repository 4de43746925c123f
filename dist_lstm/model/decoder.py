"""LSTM decoder with attention and input feeding (Luong et al., 2015).

Two ways in: `forward` for teacher-forced training over a whole target sequence, and
`init_state` + `step` for search, one token at a time. Both run the same `_decode`, so
greedy search reproduces exactly what training scores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from dist_lstm.batch import real_token_positions
from dist_lstm.model.attention import Attention
from dist_lstm.model.cpu.onednn_weights import Linear, ReorderedWeight, linear
from dist_lstm.model.encoder import EncoderOutput
from dist_lstm.model.loss import linear_cross_entropy
from dist_lstm.model.lstm import DecoderLSTM
from dist_lstm.model.word_dropout import WordDropout


@dataclass
class DecoderState:
    """Everything carried between decoder steps. L = layers, B = decoder rows, N = source
    sentences, H = hidden.

    B is a multiple of N: each sentence's B / N rows are consecutive (beam search's
    hypotheses of one sentence) and share its encoder outputs, stored once.
    """

    h: torch.Tensor  # (L, B, H)
    c: torch.Tensor  # (L, B, H)
    feed: torch.Tensor  # (B, H) previous attentional hidden state (input feeding)
    keys: torch.Tensor  # (N, S, H) attention keys, projected once
    memory: torch.Tensor  # (N, S, M) encoder outputs
    mask: torch.Tensor  # (N, S) True at real source tokens
    # (B, S) attention weights of the step that made this state (its last position); only
    # search reads it, right after the step, so selecting rows does not carry it along.
    attention: Optional[torch.Tensor] = None

    def select(self, rows: torch.Tensor) -> "DecoderState":
        """Keep/reorder rows of a state with one row per sentence (greedy search)."""
        return self.select_hypotheses(rows, sources=rows)

    def select_hypotheses(
        self, rows: torch.Tensor, sources: Optional[torch.Tensor] = None
    ) -> "DecoderState":
        """Keep/reorder/repeat decoder rows (beam search expands and prunes hypotheses);
        `sources` keeps/reorders the sentences (default: all, untouched). The rows must
        stay grouped by sentence, in the sentences' order."""
        if sources is None:
            keys, memory, mask = self.keys, self.memory, self.mask
        else:
            keys, memory, mask = (
                x.index_select(0, sources) for x in (self.keys, self.memory, self.mask)
            )
        return DecoderState(
            h=self.h.index_select(1, rows),
            c=self.c.index_select(1, rows),
            feed=self.feed.index_select(0, rows),
            keys=keys,
            memory=memory,
            mask=mask,
        )

    @staticmethod
    def cat(states: Sequence["DecoderState"]) -> "DecoderState":
        """The rows of several states in one, as search adds sentences to a running batch.

        Their sources may differ in length: memory, keys and mask are padded to the
        longest, and attention gives padding exactly zero weight.
        """
        length = max(state.mask.size(1) for state in states)

        def padded(x: torch.Tensor, value=0.0) -> torch.Tensor:  # (B, S, ...) -> (B, length, ...)
            pad = [0, 0] * (x.dim() - 2) + [0, length - x.size(1)]
            return F.pad(x, pad, value=value)

        return DecoderState(
            h=torch.cat([state.h for state in states], dim=1),
            c=torch.cat([state.c for state in states], dim=1),
            feed=torch.cat([state.feed for state in states]),
            keys=torch.cat([padded(state.keys) for state in states]),
            memory=torch.cat([padded(state.memory) for state in states]),
            mask=torch.cat([padded(state.mask, False) for state in states]),
        )


class OutputLayer(Linear):
    """The vocabulary projection (H -> V). Given targets, it returns the fused projection
    + loss instead of logits; being a module call either way lets ZeRO-3 gather its
    weights for it."""

    def forward(
        self,
        hidden: torch.Tensor,
        targets: Optional[torch.Tensor] = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        if targets is None:
            return super().forward(hidden)
        return linear_cross_entropy(hidden, self.weight, self.bias, targets, label_smoothing)


class Decoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden_size: int,
        memory_size: int,
        num_layers: int,
        attention: str,
        input_feeding: bool,
        dropout: float,
        tie_embeddings: bool,
        padding_idx: int,
        word_dropout: float = 0.0,
    ):
        super().__init__()
        self.input_feeding = input_feeding
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = WordDropout(word_dropout)  # of the gold prefix fed back in
        self.lstm = DecoderLSTM(
            emb_dim + (hidden_size if input_feeding else 0),
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.attention = Attention(attention, hidden_size, memory_size)
        self.combine = Linear(memory_size + hidden_size, hidden_size, bias=False)
        # Encoder final state (top layer) -> initial state of every decoder layer.
        self.bridge_h = Linear(memory_size, num_layers * hidden_size)
        self.bridge_c = Linear(memory_size, num_layers * hidden_size)
        self.tie_embeddings = tie_embeddings
        if tie_embeddings:
            # Logits come from the embedding matrix; map H to E first when they differ.
            self.pre_output = (
                Linear(hidden_size, emb_dim, bias=False)
                if hidden_size != emb_dim
                else nn.Identity()
            )
            self.output_bias = nn.Parameter(torch.zeros(vocab_size))
            self.reordered_embedding = ReorderedWeight()
        else:
            self.output = OutputLayer(hidden_size, vocab_size)

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        batch = enc.memory.size(0)

        def bridge(layer: nn.Linear, final: torch.Tensor) -> torch.Tensor:
            # (B, M) -> (L, B, H)
            out = torch.tanh(layer(final)).view(batch, self.num_layers, self.hidden_size)
            return out.transpose(0, 1).contiguous()

        return DecoderState(
            h=bridge(self.bridge_h, enc.final[0]),
            c=bridge(self.bridge_c, enc.final[1]),
            feed=enc.memory.new_zeros(batch, self.hidden_size),
            keys=self.attention.precompute(enc.memory),
            memory=enc.memory,
            mask=enc.mask,
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) attentional hidden states -> (..., V) unnormalized scores."""
        if self.tie_embeddings:
            return linear(
                self.pre_output(hidden),
                self.embedding.weight,
                self.output_bias,
                self.reordered_embedding,
            )
        return self.output(hidden)

    def _decode(
        self, embedded: torch.Tensor, state: DecoderState
    ) -> Tuple[torch.Tensor, DecoderState]:
        """embedded (B, T, E) -> attentional hidden states (B, T, H) and the next state.

        With input feeding T must be 1: each step's input includes the previous output.
        """
        inputs = embedded
        if self.input_feeding:
            inputs = torch.cat([embedded, state.feed.unsqueeze(1)], dim=2)  # (B, 1, E+H)
        output, (h, c) = self.lstm(inputs, (state.h, state.c))  # (B, T, H)
        # A sentence's rows attend to its memory together: (N, B / N * T, H) queries.
        query = output.reshape(state.keys.size(0), -1, output.size(-1))
        context, weights = self.attention(query, state.keys, state.memory, state.mask)
        context = context.reshape(output.size(0), output.size(1), -1)  # (B, T, M)
        hidden = self.dropout(torch.tanh(self.combine(torch.cat([context, output], dim=2))))
        last_weights = weights.reshape(output.size(0), output.size(1), -1)[:, -1]  # (B, S)
        return hidden, replace(state, h=h, c=c, feed=hidden[:, -1], attention=last_weights)

    def features(self, tgt_in: torch.Tensor, enc: EncoderOutput) -> torch.Tensor:
        """Teacher forcing: tgt_in (B, T) ids (BOS first) -> attentional states (B, T, H)."""
        state = self.init_state(enc)
        embedded = self.dropout(self.word_dropout(self.embedding(tgt_in)))  # (B, T, E)
        if not self.input_feeding:
            hidden, _ = self._decode(embedded, state)
            return hidden
        outputs = []
        for t in range(tgt_in.size(1)):
            hidden, state = self._decode(embedded[:, t : t + 1], state)
            outputs.append(hidden)
        return torch.cat(outputs, dim=1)

    def forward(
        self,
        tgt_in: torch.Tensor,
        enc: EncoderOutput,
        tgt_out: Optional[torch.Tensor] = None,
        label_smoothing: float = 0.0,
        tgt_positions: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, int]]:
        """Without tgt_out: logits (B, T, V). With tgt_out (B, T), padding at
        embedding.padding_idx: (summed label-smoothed loss, real target tokens), the
        vocabulary projection fused with the loss over real tokens only (see loss.py).

        tgt_positions (N,): flat positions in tgt_out of its real tokens, computed on the
        host (Batch.to); without them they are found here, which makes a GPU wait.
        """
        hidden = self.features(tgt_in, enc)
        if tgt_out is None:
            return self.logits(hidden)
        if tgt_positions is None:
            tgt_positions = real_token_positions(tgt_out, self.embedding.padding_idx)
        hidden = hidden.reshape(-1, hidden.size(-1)).index_select(0, tgt_positions)  # (N, H)
        targets = tgt_out.reshape(-1).index_select(0, tgt_positions)  # (N,)
        if self.tie_embeddings:
            loss = linear_cross_entropy(
                self.pre_output(hidden),
                self.embedding.weight,
                self.output_bias,
                targets,
                label_smoothing,
            )
        else:
            loss = self.output(hidden, targets, label_smoothing)
        return loss, tgt_positions.numel()

    def step(
        self, prev_tokens: torch.Tensor, state: DecoderState
    ) -> Tuple[torch.Tensor, DecoderState]:
        """One search step: prev_tokens (B,) -> log-probabilities (B, V) and the next state."""
        embedded = self.dropout(self.embedding(prev_tokens.unsqueeze(1)))  # (B, 1, E)
        hidden, state = self._decode(embedded, state)
        return torch.log_softmax(self.logits(hidden.squeeze(1)).float(), dim=-1), state
