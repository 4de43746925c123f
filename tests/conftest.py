"""Shared fixtures: the real Hydra config composed from conf/, shrunk for tests.

The suite runs on the CPU on every machine: GPUs are hidden from it (and from every
process it starts), because its exact-resume and multi-rank tests compare bitwise and
place two ranks per machine. The tests marked `cuda` (tests/gpu/) run on a GPU when
DIST_LSTM_TEST_CUDA=1 leaves it visible, as benchmarks/gpu_check.sh does.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Dict, List, Sequence

if os.environ.get("DIST_LSTM_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch looks for GPUs

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from dist_lstm.config import register_configs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


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


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """conf/config.yaml with `overrides`, exactly as `python train.py ...` would see it."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


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


def bf16_supported() -> bool:
    """Whether this CPU runs LSTMs under bf16 autocast. Probed here with torch alone, not
    with dist_lstm.precision (under test): a regression there must fail, not skip."""
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    try:
        with torch.enable_grad():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out, _ = lstm(torch.randn(2, 3, 8))
            out.float().sum().backward()
    except RuntimeError:
        return False
    return True


needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="this CPU has no bf16 support")
