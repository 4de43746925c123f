"""From a data config to tokenizer, datasets and data loaders: the data half of a run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from dist_lstm.data.corpus import ParallelText, load_parallel, read_checksums
from dist_lstm.data.dataset import TranslationDataset, build_dataset, collate
from dist_lstm.data.sampler import BucketBatchSampler, token_budget_batches
from dist_lstm.data.tokenizer import Tokenizer, TokenizerOptions, train_or_load

log = logging.getLogger(__name__)


@dataclass
class TranslationData:
    """What training needs from the data side."""

    tokenizer: Tokenizer
    train: TranslationDataset
    valid: TranslationDataset
    test: Optional[ParallelText]


def load_split(
    data: DictConfig, split: str, checksums: Optional[Dict[str, str]], limit: Optional[int] = None
) -> ParallelText:
    """Raw text of `split` (train/valid/test), verified against `checksums` when given."""
    return load_parallel(data[f"{split}_src"], data[f"{split}_tgt"], checksums, limit)


def tokenizer_options(data: DictConfig) -> TokenizerOptions:
    return TokenizerOptions(**{k: data.tokenizer[k] for k in TokenizerOptions.__annotations__})


def build_data(
    data: DictConfig,
    is_main: bool = True,
    broadcast: Callable[[Any], Any] = lambda models: models,
) -> TranslationData:
    """Read and verify the corpora, train or reuse the tokenizer, tokenize and filter.

    With several ranks only the main one trains (or loads) the tokenizer; `broadcast`
    hands its serialized models to the others, so no rank depends on a shared disk.
    """
    checksums = read_checksums(data.checksums) if data.checksums else None
    train_text = load_split(data, "train", checksums, data.max_train_examples)
    valid_text = load_split(data, "valid", checksums, data.max_valid_examples)
    has_test = data.test_src and data.test_tgt
    test_text = load_split(data, "test", checksums) if has_test else None
    payload = None
    if is_main:
        tokenizer = train_or_load(train_text, tokenizer_options(data), data.cache_dir)
        if data.tokenizer.prune_target_vocab:
            tokenizer = tokenizer.with_target_vocab(train_text.tgt)
        payload = tokenizer.payload
    tokenizer = Tokenizer(broadcast(payload))
    log.info(
        "vocabulary: source %d, target %d (%s)",
        tokenizer.src_vocab_size,
        tokenizer.tgt_vocab_size,
        "joint" if tokenizer.joint else "separate",
    )
    return TranslationData(
        tokenizer=tokenizer,
        train=build_dataset(train_text, tokenizer, data.max_len, "train"),
        valid=build_dataset(valid_text, tokenizer, None, "valid"),
        test=test_text,
    )


def make_train_loader(
    dataset: TranslationDataset, max_tokens: int, seed: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """A DataLoader over shuffled token-budget batches; its batch_sampler holds the
    resumable position.

    Workers stay at 0: the tensors are tiny, and a worker's prefetching would put the
    sampler's position ahead of the batches actually trained on.
    """
    sampler = BucketBatchSampler(dataset.sizes(), max_tokens, seed, rank, world_size)
    # Its own generator: each new iterator draws a seed from it, and would otherwise take
    # it from the global RNG, which a resumed run (new iterator mid-epoch) would shift.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0, generator=generator
    )


def make_eval_loader(
    dataset: TranslationDataset, max_tokens: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """The same length-sorted batches on every pass; rank r takes every world_size-th one.

    Every example is evaluated exactly once across ranks (no padding to equal counts):
    evaluation only meets the other ranks after the loop, to sum and gather results.
    """
    sizes = np.asarray(dataset.sizes())
    plan = token_budget_batches(sizes, np.argsort(sizes, kind="stable"), max_tokens)
    batches = plan.as_lists()
    # Own generator (see make_train_loader): validating must not move the global RNG,
    # or a run that validates before a checkpoint would train on differently afterwards.
    return DataLoader(
        dataset,
        batch_sampler=batches[rank::world_size],
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
