"""Text files the tests write, and the toy reversal task the full trainings learn.

The `corpus` fixture (tests/conftest.py) writes REVERSAL_TASK once per session: every
whole training (integration/test_trainer, test_resume, test_distributed, test_sweeps,
test_slurm, test_two_hosts, unit/logging/test_wandb) trains on the same files and adds
only its own run settings.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Sequence


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def reversal_corpus(
    root: Path, seed: int, sizes: Dict[str, int], letters: str, max_words: int
) -> List[str]:
    """A toy translation task (reverse the sentence's characters), written as
    train/valid files under `root`; returns the data.* overrides that select it."""
    rng = random.Random(seed)
    overrides = ["data=custom"]
    for split, n in sizes.items():
        src = [
            " ".join(rng.choice(letters) for _ in range(rng.randint(2, max_words)))
            for _ in range(n)
        ]
        overrides.append(f"data.{split}_src={write_lines(root / f'{split}.src', src)}")
        overrides.append(
            f"data.{split}_tgt={write_lines(root / f'{split}.tgt', [s[::-1] for s in src])}"
        )
    return overrides


# 600 training pairs over eight letters: two ranks still see dozens of batches an epoch,
# and the cluster tests' runs (test_slurm, test_two_hosts) last long enough for their
# faults. The test split is drawn after train and valid, so it changes neither.
TRAIN_PAIRS = 600
REVERSAL_TASK = {
    "seed": 2,
    "sizes": {"train": TRAIN_PAIRS, "valid": 30, "test": 20},
    "letters": "abcdefgh",
    "max_words": 9,
}
# The tokenizer and batch size that fit the task.
VOCAB_SIZE, MAX_TOKENS = 16, 160
REVERSAL_TASK_DATA = (f"data.tokenizer.vocab_size={VOCAB_SIZE}", f"data.max_tokens={MAX_TOKENS}")


def write_reversal_task(root: Path) -> List[str]:
    """Write REVERSAL_TASK under `root`; the data.* overrides of its train and valid
    splits, tokenizer and batch size. The test split is left out (a run with one decodes
    it at the end, which costs every run its time): `with_test_split` adds it."""
    overrides = reversal_corpus(root, **REVERSAL_TASK)
    return [*(o for o in overrides if not o.startswith("data.test_")), *REVERSAL_TASK_DATA]


def with_test_split(corpus: Sequence[str]) -> List[str]:
    """`corpus` (write_reversal_task's overrides) with the test split written beside it."""
    (train_src,) = (o.split("=", 1)[1] for o in corpus if o.startswith("data.train_src="))
    root = Path(train_src).parent
    return [*corpus, f"data.test_src={root / 'test.src'}", f"data.test_tgt={root / 'test.tgt'}"]
