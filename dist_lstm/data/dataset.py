"""Tokenized parallel datasets and the collate function that pads them into batches."""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence

import torch
from torch.utils.data import Dataset

from dist_lstm.batch import BOS_ID, EOS_ID, PAD_ID, Batch
from dist_lstm.data.corpus import ParallelText
from dist_lstm.data.tokenizer import Tokenizer
from dist_lstm.errors import DataError

log = logging.getLogger(__name__)


class TranslationDataset(Dataset):
    """Pairs of subword-id lists plus the raw target text (the BLEU reference)."""

    def __init__(self, src_ids: List[List[int]], tgt_ids: List[List[int]], references: List[str]):
        self.src_ids = src_ids
        self.tgt_ids = tgt_ids
        self.references = references

    def __len__(self) -> int:
        return len(self.src_ids)

    def __getitem__(self, index: int):
        return index, self.src_ids[index], self.tgt_ids[index]

    def sizes(self) -> List[int]:
        """Tokens each pair occupies in a padded batch (the longer side, plus BOS/EOS)."""
        return [max(len(s), len(t) + 1) for s, t in zip(self.src_ids, self.tgt_ids)]


def build_dataset(
    text: ParallelText, tokenizer: Tokenizer, max_len: Optional[int], split: str
) -> TranslationDataset:
    """Tokenize a split; drop empty pairs and (if max_len is set) over-long ones.

    Validation keeps over-long pairs (max_len=None) so its BLEU is over the whole split.
    """
    src_ids = tokenizer.encode("src", text.src)
    tgt_ids = tokenizer.encode("tgt", text.tgt)
    keep, empty, too_long = [], 0, 0
    for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        if not s or not t:
            empty += 1
        elif max_len is not None and (len(s) > max_len or len(t) > max_len):
            too_long += 1
        else:
            keep.append(i)
    log.info(
        "%s: %d pairs kept, %d empty and %d longer than data.max_len=%s dropped",
        split,
        len(keep),
        empty,
        too_long,
        max_len,
    )
    if not keep:
        raise DataError(
            f"{split} split is empty after filtering ({empty} empty, {too_long} over-long "
            f"pairs) in {text.src_path} / {text.tgt_path}. Check the files, or raise "
            "data.max_len."
        )
    return TranslationDataset(
        [src_ids[i] for i in keep], [tgt_ids[i] for i in keep], [text.tgt[i] for i in keep]
    )


def _pad(seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(seqs):
        out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


def collate(items) -> Batch:
    """Pad a list of (index, src_ids, tgt_ids) into a Batch."""
    indices, srcs, tgts = zip(*items)
    return Batch(
        src=_pad(srcs),
        src_lengths=torch.tensor([len(s) for s in srcs], dtype=torch.long),
        tgt_in=_pad([[BOS_ID, *t] for t in tgts]),
        tgt_out=_pad([[*t, EOS_ID] for t in tgts]),
        indices=torch.tensor(indices, dtype=torch.long),
    )
