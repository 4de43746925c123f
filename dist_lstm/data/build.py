"""From a data config to tokenizer, datasets and data loaders (and the padded batches
they yield, `collate`): the data half of a run."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from dist_lstm.batch import BOS_ID, EOS_ID, PAD_ID, Batch
from dist_lstm.config.schema import DataConfig
from dist_lstm.data.corpus import ParallelText, load_parallel, read_checksums, verify_checksum
from dist_lstm.data.mapped import MappedSplit
from dist_lstm.data.prepared import MANIFEST, ensure_prepared
from dist_lstm.data.sampler import BucketBatchSampler, token_budget_batches
from dist_lstm.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class TranslationData:
    """What training needs from the data side."""

    tokenizer: Tokenizer
    train: MappedSplit
    valid: MappedSplit
    test: Optional[ParallelText]
    # (first pair, end, weight) of each training corpus, for the batch planner
    train_shares: List[Tuple[int, int, float]]


def verify_inputs(data: DataConfig) -> None:
    """Check the raw files against data.checksums (a SHA256SUMS file) when it is set."""
    if not data.checksums:
        return
    checksums = read_checksums(data.checksums)
    splits = (data.train_src, data.train_tgt, data.valid_src, data.valid_tgt)
    for path in (*splits, data.test_src, data.test_tgt):
        if path:
            verify_checksum(path, checksums)


def build_data(
    data: DataConfig, prepares: bool = True, wait_s: Optional[float] = None
) -> TranslationData:
    """The prepared token files for `data` (written first if missing or stale), opened.

    prepares: this process writes them when needed (one per node); the others wait for
    them up to `wait_s` seconds (the run's strategy.timeout_s), then every process reads
    the same files.
    """
    if prepares:
        verify_inputs(data)
    directory = ensure_prepared(data, prepares, wait_s)
    manifest = json.loads((directory / MANIFEST).read_text())
    tokenizer = Tokenizer.load(directory / "tokenizer")
    log.info(
        "data: %s | vocabulary: source %d, target %d (%s) | %d training pairs",
        directory,
        tokenizer.src_vocab_size,
        tokenizer.tgt_vocab_size,
        "joint" if tokenizer.joint else "separate",
        manifest["splits"]["train"]["pairs"],
    )
    has_test = data.test_src and data.test_tgt
    ends = np.cumsum(manifest["splits"]["train"]["corpus_pairs"]).tolist()
    weights = [1.0] + [float(corpus.weight) for corpus in data.corpora]
    shares = [
        (end - n, end, w)
        for end, n, w in zip(ends, manifest["splits"]["train"]["corpus_pairs"], weights)
    ]
    return TranslationData(
        tokenizer=tokenizer,
        train=MappedSplit(directory, "train", manifest["dtype"]),
        valid=MappedSplit(directory, "valid", manifest["dtype"]),
        test=load_parallel(data.test_src, data.test_tgt) if has_test else None,
        train_shares=shares,
    )


def make_train_loader(
    dataset: MappedSplit,
    max_tokens: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    shares: Optional[List[Tuple[int, int, float]]] = None,
) -> DataLoader:
    """A DataLoader over shuffled token-budget batches; its batch_sampler holds the
    resumable position.

    Workers stay at 0: a worker's prefetching would put the sampler's position ahead of
    the batches actually trained on.
    """
    sampler = BucketBatchSampler(dataset.sizes(), max_tokens, seed, rank, world_size, shares)
    # Its own generator: each new iterator draws a seed from it, and would otherwise take
    # it from the global RNG, which a resumed run (new iterator mid-epoch) would shift.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0, generator=generator
    )


def make_eval_loader(
    dataset: MappedSplit, max_tokens: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """The same length-sorted batches on every pass; rank r takes every world_size-th one.

    Every example is evaluated exactly once across ranks (no padding to equal counts):
    evaluation only meets the other ranks after the loop, to sum and gather results.
    """
    sizes = dataset.sizes()
    plan = token_budget_batches(sizes, np.argsort(sizes, kind="stable"), max_tokens)
    # Own generator (see make_train_loader): validating must not move the global RNG,
    # or a run that validates before a checkpoint would train on differently afterwards.
    return DataLoader(
        dataset,
        batch_sampler=plan.as_lists()[rank::world_size],
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )


def _pad(seqs: Sequence[np.ndarray], before: int = -1, after: int = -1) -> torch.Tensor:
    """(B, longest [+1]) PAD_ID-padded ids; `before`/`after`: an id put before or after
    every sequence (BOS for decoder inputs, EOS for targets)."""
    extra = int(before >= 0) + int(after >= 0)
    out = np.full((len(seqs), max(len(s) for s in seqs) + extra), PAD_ID, dtype=np.int64)
    start = int(before >= 0)
    for row, seq in enumerate(seqs):
        if before >= 0:
            out[row, 0] = before
        out[row, start : start + len(seq)] = seq
        if after >= 0:
            out[row, start + len(seq)] = after
    return torch.from_numpy(out)


def collate(items: Sequence[Tuple[int, Sequence[int], Sequence[int]]]) -> Batch:
    """Pad a list of (index, src_ids, tgt_ids) into a Batch."""
    indices, srcs, tgts = zip(*items)
    return Batch(
        src=_pad(srcs),
        src_lengths=torch.tensor([len(s) for s in srcs], dtype=torch.long),
        tgt_in=_pad(tgts, before=BOS_ID),
        tgt_out=_pad(tgts, after=EOS_ID),
        indices=torch.tensor(indices, dtype=torch.long),
    )
