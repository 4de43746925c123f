"""A run's checkpoints: layout and commit (manager.py), reading any of them back as full
weights (consolidate.py), RNG state (rng.py) and averaging (average.py)."""

from dist_lstm.checkpoint.consolidate import is_checkpoint_folder, load_checkpoint
from dist_lstm.checkpoint.manager import (
    CheckpointManager,
    completed_checkpoints,
    load_model_weights,
    read_meta,
    write_atomically,
)

__all__ = [
    "CheckpointManager",
    "completed_checkpoints",
    "is_checkpoint_folder",
    "load_checkpoint",
    "load_model_weights",
    "read_meta",
    "write_atomically",
]
