"""The translation model: pure torch.nn, unaware of ranks, launchers and checkpoints."""

from dist_lstm.model.seq2seq import Seq2Seq, build_model

__all__ = ["Seq2Seq", "build_model"]
