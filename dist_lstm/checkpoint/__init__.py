"""Checkpoint files of a run; see manager.py."""

from dist_lstm.checkpoint.manager import CheckpointManager, load_checkpoint

__all__ = ["CheckpointManager", "load_checkpoint"]
