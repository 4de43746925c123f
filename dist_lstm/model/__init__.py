"""The translation model: pure torch.nn, unaware of ranks, launchers and checkpoints."""

from dist_lstm.model.ensemble import Ensemble
from dist_lstm.model.seq2seq import Seq2Seq, build_model

__all__ = ["Ensemble", "Seq2Seq", "build_model"]
