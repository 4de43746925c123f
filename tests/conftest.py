"""Shared fixtures and hooks: the real Hydra config composed from conf/, shrunk for tests.
The tests' helpers (run settings, corpora, paths, hardware probes) are tests/helpers/'s.

The suite runs on the CPU on every machine: GPUs are hidden from it (and from every
process it starts), because its exact-resume and multi-rank tests compare bitwise and
place two ranks per machine. The tests marked `cuda` (tests/gpu/) run on a GPU when
DIST_LSTM_TEST_CUDA=1 leaves it visible, as benchmarks/gpu_check.sh does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

if os.environ.get("DIST_LSTM_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch looks for GPUs

import pytest  # noqa: E402
import torch  # noqa: E402

from dist_lstm.config.compose import compose_config  # noqa: E402
from tests.helpers.corpus import write_reversal_task  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked cuda need a visible GPU: skipped, saying so, everywhere else."""
    if torch.cuda.is_available():
        return
    reason = "needs a CUDA GPU and DIST_LSTM_TEST_CUDA=1 (benchmarks/gpu_check.sh)"
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep tokenizer caches out of the user's home; one cache for the whole session.
    W&B stays off unless a test turns it on (no network, no files in run directories)."""
    os.environ["DIST_LSTM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["WANDB_MODE"] = "disabled"
    yield


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A run directory of the smoke experiment (150 steps), trained once for every test
    that uses a trained model (translate, evaluate, serve). Tests must not change it."""
    from dist_lstm.train.run import train

    path = tmp_path_factory.mktemp("smoke")
    train(compose_config(["experiment=smoke", "trainer.progress_bar=false"]), run_dir=path)
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> List[str]:
    """The reversal task every whole training trains on (tests/helpers/corpus.py), written
    once: the data.* overrides that select it. Each test file adds its run settings."""
    return write_reversal_task(tmp_path_factory.mktemp("corpus"))
