"""Checkpoint files of a run (manager.py) and checkpoint averaging (average.py)."""

from dist_lstm.checkpoint.manager import (
    CheckpointManager,
    load_checkpoint,
    load_model_weights,
    write_atomically,
)

__all__ = ["CheckpointManager", "load_checkpoint", "load_model_weights", "write_atomically"]
