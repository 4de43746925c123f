"""The collate function that pads a batch of id sequences into a Batch."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch

from dist_lstm.batch import BOS_ID, EOS_ID, PAD_ID, Batch


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
