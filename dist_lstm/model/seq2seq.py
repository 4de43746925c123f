"""The encoder-decoder model and its construction from a model config."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from dist_lstm.model.cpu.onednn_weights import invalidate_reordered_weights, track_weight_changes
from dist_lstm.model.decoder import Decoder, DecoderState
from dist_lstm.model.encoder import Encoder, EncoderOutput


class Seq2Seq(nn.Module):
    """Source ids -> target logits. Pure torch.nn: no ranks, devices or checkpoint formats."""

    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        track_weight_changes(self)  # search's oneDNN copies follow steps and loads

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        track_weight_changes(self)  # a deep copy or unpickled copy tracks its own weights

    def invalidate_reordered_weights(self) -> None:
        """Drop search's oneDNN copies of the weights; rebuilt at their next use."""
        invalidate_reordered_weights(self)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        return self.encoder(src, src_lengths)

    # The stepwise interface search uses (dist_lstm/translate/search.py); an Ensemble offers it too.
    def init_state(self, encoded: EncoderOutput) -> DecoderState:
        return self.decoder.init_state(encoded)

    def step(
        self, prev_tokens: torch.Tensor, state: DecoderState
    ) -> Tuple[torch.Tensor, DecoderState]:
        """prev_tokens (B,) -> log-probabilities (B, V) and the next state."""
        return self.decoder.step(prev_tokens, state)

    def forward(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        tgt_in: torch.Tensor,
        tgt_out: Optional[torch.Tensor] = None,
        label_smoothing: float = 0.0,
        tgt_positions: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, int]]:
        """src (B, S), src_lengths (B,), tgt_in (B, T) -> logits (B, T, V); with tgt_out
        (B, T): (summed loss, real target tokens), as training needs (Decoder.forward)."""
        if torch.is_grad_enabled():  # training: copies would only hold memory, and a change
            # no hook sees (weights written in place by hand) must not leave them stale
            self.invalidate_reordered_weights()
        encoded = self.encode(src, src_lengths)
        return self.decoder(tgt_in, encoded, tgt_out, label_smoothing, tgt_positions)


def build_model(
    model: Mapping[str, Any], src_vocab_size: int, tgt_vocab_size: int, padding_idx: int = 0
) -> Seq2Seq:
    """Build from a `model` config group (any mapping with the ModelConfig keys; a saved
    one comes through checkpoint loading, which fills in keys added since)."""
    encoder = Encoder(
        vocab_size=src_vocab_size,
        emb_dim=model["emb_dim"],
        hidden_size=model["hidden_size"],
        num_layers=model["encoder_layers"],
        bidirectional=model["bidirectional"],
        dropout=model["dropout"],
        padding_idx=padding_idx,
        word_dropout=model["word_dropout"],
    )
    decoder = Decoder(
        vocab_size=tgt_vocab_size,
        emb_dim=model["emb_dim"],
        hidden_size=model["hidden_size"],
        memory_size=encoder.output_size,
        num_layers=model["decoder_layers"],
        attention=model["attention"],
        input_feeding=model["input_feeding"],
        dropout=model["dropout"],
        tie_embeddings=model["tie_embeddings"],
        padding_idx=padding_idx,
        word_dropout=model["word_dropout"],
    )
    return Seq2Seq(encoder, decoder)
