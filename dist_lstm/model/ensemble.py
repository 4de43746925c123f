"""Several trained models searched as one: at every step their log-probabilities are
averaged, so beam search ranks hypotheses by what the models agree on.

An `Ensemble` offers the stepwise interface search uses (`encode`, `init_state`, `step`)
and its state offers the row operations search applies (`select`, `select_hypotheses`,
`cat`), each applied to every member's own state. The members must share the target
vocabulary (the same tokenizer); their architectures may differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from dist_lstm.model.decoder import DecoderState
from dist_lstm.model.encoder import EncoderOutput
from dist_lstm.model.seq2seq import Seq2Seq


@dataclass
class EnsembleState:
    """One DecoderState per member, their rows kept in step."""

    members: List[DecoderState]

    @property
    def attention(self) -> Optional[torch.Tensor]:
        """(B, S) the members' attention weights of the last step, averaged."""
        weights = [state.attention for state in self.members]
        if any(w is None for w in weights):
            return None
        return torch.stack(weights).mean(dim=0)

    def select(self, rows: torch.Tensor) -> "EnsembleState":
        return EnsembleState([state.select(rows) for state in self.members])

    def select_hypotheses(
        self, rows: torch.Tensor, sources: Optional[torch.Tensor] = None
    ) -> "EnsembleState":
        return EnsembleState([state.select_hypotheses(rows, sources) for state in self.members])

    @staticmethod
    def cat(states: Sequence["EnsembleState"]) -> "EnsembleState":
        per_member = zip(*(state.members for state in states))
        return EnsembleState([DecoderState.cat(list(parts)) for parts in per_member])


class Ensemble(nn.Module):
    """Models decoded together; their step log-probabilities (B, V) are averaged."""

    def __init__(self, models: Sequence[Seq2Seq]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        sizes = {model.decoder.embedding.num_embeddings for model in models}
        if len(sizes) > 1:
            raise ValueError(f"the models' target vocabularies differ in size: {sorted(sizes)}")
        self.members = nn.ModuleList(models)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> List[EncoderOutput]:
        return [model.encode(src, src_lengths) for model in self.members]

    def init_state(self, encoded: List[EncoderOutput]) -> EnsembleState:
        return EnsembleState([model.init_state(enc) for model, enc in zip(self.members, encoded)])

    def step(
        self, prev_tokens: torch.Tensor, state: EnsembleState
    ) -> Tuple[torch.Tensor, EnsembleState]:
        """prev_tokens (B,) -> the members' mean log-probabilities (B, V), next state."""
        outputs = [model.step(prev_tokens, s) for model, s in zip(self.members, state.members)]
        log_probs = torch.stack([lp for lp, _ in outputs]).mean(dim=0)
        return log_probs, EnsembleState([s for _, s in outputs])
