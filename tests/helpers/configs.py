"""Config overrides and model configs the tests share, so a small run means the same
thing in every test file."""

from __future__ import annotations

from typing import Dict

# What every tiny test run shares: short pairs, the tiny model, no warm-up, no progress
# bar, no early stopping; TINIER_MODEL shrinks the model further where size is irrelevant.
TINY_RUN = (
    "data.max_len=20",
    "model=tiny",
    "optim.warmup_steps=0",
    "trainer.progress_bar=false",
    "trainer.early_stopping_patience=0",
)
TINIER_MODEL = ("model.emb_dim=16", "model.hidden_size=16")
# The multi-rank tests' runs (test_distributed, test_slurm, test_two_hosts) on the
# shared corpus: no dropout and a constant LR, so runs at different world sizes compare;
# every step logged, so a stopped run's step can be read back.
DISTRIBUTED_RUN = (
    *TINY_RUN,
    "model.dropout=0.0",
    "optim.schedule=constant",
    "trainer.max_epochs=null",
    "trainer.log_every_steps=1",
)
# A `python train.py` run that only has to start, train 4 steps, validate and save.
SHORT_SMOKE_RUN = (
    "experiment=smoke",
    "model=tiny",
    "trainer.max_steps=4",
    "trainer.val_every_steps=4",
    "data.max_train_examples=200",
    "data.max_valid_examples=20",
    "trainer.progress_bar=false",
)


def model_config(**overrides) -> Dict[str, object]:
    """A small model group (the ModelConfig keys) for tests that build models directly."""
    return {
        "emb_dim": 8,
        "hidden_size": 8,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "bidirectional": True,
        "attention": "general",
        "input_feeding": True,
        "dropout": 0.0,
        "word_dropout": 0.0,
        "tie_embeddings": False,
        **overrides,
    }
