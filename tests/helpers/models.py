"""Tiny models built directly (no config, no data) and what the model and search tests
measure on them."""

from __future__ import annotations

import torch

from dist_lstm.batch import EOS_ID, PAD_ID
from dist_lstm.model import build_model
from tests.helpers.configs import model_config

SRC_V, TGT_V = 30, 40


def tiny(**overrides):
    """A 2-layer model of vocabularies SRC_V/TGT_V, seeded, in eval mode."""
    sizes = {"emb_dim": 12, "hidden_size": 16, "encoder_layers": 2, "decoder_layers": 2}
    cfg = model_config(**{**sizes, **overrides})
    torch.manual_seed(0)
    return build_model(cfg, SRC_V, TGT_V, PAD_ID).eval()


def padded(seqs):
    """Token id lists -> (padded batch, lengths)."""
    out = torch.full((len(seqs), max(map(len, seqs))), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out, torch.tensor([len(s) for s in seqs])


SRC = [[5, 6, 7, 8, 9], [4, 11], [12, 13, 14]]  # three sources of different lengths


@torch.no_grad()
def sequence_log_prob(model, src, lengths, tokens):
    """Teacher-forced sum of log-probabilities of tokens + EOS for one sentence."""
    state = model.decoder.init_state(model.encode(src, lengths))
    total, prev = 0.0, torch.tensor([2])
    for token in [*tokens, EOS_ID]:
        logp, state = model.decoder.step(prev, state)
        total += float(logp[0, token])
        prev = torch.tensor([token])
    return total


def source_dependent_model(sentences, **overrides):
    """A tiny model with weights large enough that its outputs depend on the source (at
    init they barely do), and `sentences` random sources of 1-8 tokens, lengths mixed."""
    torch.manual_seed(3)
    model = tiny(**overrides)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    lengths = (6, 1, 4, 8, 2, 5, 3, 7, 2)[:sentences]
    return model, [torch.randint(4, 30, (n,)).tolist() for n in lengths]
