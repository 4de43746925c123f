"""Length-bucketed token-budget batches, sharded across ranks, with a resumable position.

Why this shape:
- Sorting by length before cutting batches keeps padding (wasted compute) low; a random
  permutation before the stable sort breaks ties differently every epoch, and the batch
  order is shuffled, so batches differ from epoch to epoch.
- Randomness comes only from a generator seeded with (seed, epoch), never the global RNG,
  so every rank computes the same batch list independently and a resumed run gets the
  same batches as an uninterrupted one.
- Every rank must run the same number of steps or collective ops hang; the batch list is
  dealt out round-robin and the last round is filled with the epoch's first batches, so
  each rank gets distinct batches (but for that fill) and the same count.
- A plan is two numpy arrays (the pairs in batch order, and where each batch starts),
  computed with array operations: tens of millions of pairs plan in seconds and cost a
  few bytes each, where Python lists of indices cost ~40.
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler


class BatchPlan:
    """Batches as slices of one index array: batch b is order[starts[b]:starts[b + 1]]."""

    def __init__(self, order: np.ndarray, starts: np.ndarray):
        self.order = order  # (N,) pair indices, batch after batch
        self.starts = starts  # (batches + 1,) offsets into order, last = N

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, batch: int) -> List[int]:
        return self.order[self.starts[batch] : self.starts[batch + 1]].tolist()

    def as_lists(self) -> List[List[int]]:
        return [self[b] for b in range(len(self))]

    def reordered(self, batch_order: np.ndarray) -> "BatchPlan":
        """The same batches in `batch_order` (a permutation of range(len(self)))."""
        lengths = np.diff(self.starts)[batch_order]
        starts = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        # Position of each pair in the new order: its batch's new start + offset in batch.
        index = _index_dtype(len(self.order))
        source = np.repeat((self.starts[:-1][batch_order] - starts[:-1]).astype(index), lengths)
        source += np.arange(len(self.order), dtype=index)
        return BatchPlan(self.order[source], starts)


def _randperm(n: int, gen: torch.Generator) -> np.ndarray:
    """torch's permutation (the same one in int32 as in int64, at half the memory)."""
    dtype = torch.int32 if n < 2**31 else torch.int64
    return torch.randperm(n, generator=gen, dtype=dtype).numpy()


def _all_once(shares: Sequence[Tuple[int, int, float]], pairs: int) -> bool:
    """Whether the shares are every pair exactly once (one plan, as without shares)."""
    return all(w == 1 for _, _, w in shares) and sum(e - s for s, e, _ in shares) == pairs


def _index_dtype(n: int) -> type:
    """int32 indices while they fit: half the memory of a plan over millions of pairs."""
    return np.int32 if n < 2**31 else np.int64


def batch_starts(sorted_sizes: np.ndarray, max_tokens: int) -> np.ndarray:
    """Where each batch starts when pairs of ascending `sorted_sizes` are cut greedily so
    that count x largest size fits `max_tokens`; a pair over the budget alone still gets
    a batch of one (validation keeps long sentences). Returns (batches + 1,) offsets.

    Loops once per batch, not per pair: with ascending sizes the largest is the last, so
    a batch from i holds the largest c with sizes[i + c - 1] * c <= max_tokens.
    """
    n = len(sorted_sizes)
    starts = [0]
    i = 0
    while i < n:
        most = max(1, min(n - i, max_tokens // max(int(sorted_sizes[i]), 1)))
        # padded size of the first 1..most pairs: increasing, so those that fit are a prefix
        padded = sorted_sizes[i : i + most].astype(np.int64) * np.arange(1, most + 1)
        i += max(1, int(np.count_nonzero(padded <= max_tokens)))
        starts.append(i)
    return np.asarray(starts, dtype=np.int64)


def token_budget_batches(sizes: np.ndarray, order: np.ndarray, max_tokens: int) -> BatchPlan:
    """Cut `order` (pair indices in ascending size) into token-budget batches."""
    order = np.asarray(order).astype(_index_dtype(len(order)), copy=False)
    return BatchPlan(order, batch_starts(np.asarray(sizes)[order], max_tokens))


class BucketBatchSampler(Sampler[List[int]]):
    """Yields this rank's batches of dataset indices for the current epoch.

    The epoch's batch list is the same at every world size; ranks take it in rounds
    (rank r takes batch `consumed + r`) and all advance `consumed` by the world size
    together. The position is therefore counted in global batches, so a checkpoint
    written by N ranks resumes on M ranks without skipping or repeating a batch. In the
    last round, ranks past the end take batches from the epoch's start, so that every
    rank runs the same number of steps.

    Call `set_epoch(e)` before iterating each epoch; `state_dict()`/`load_state_dict()`
    carry the epoch and the global position.

    `shares`: (start, end, weight) of each corpus among the pairs. An epoch holds each
    pair of a corpus floor(weight) times, plus that fraction of its pairs drawn from the
    epoch's generator (so the same ones on every rank and after a resume).
    """

    def __init__(
        self,
        sizes: Sequence[int] | np.ndarray,
        max_tokens: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shares: Optional[Sequence[Tuple[int, int, float]]] = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.sizes = np.asarray(sizes)
        self.max_tokens = max_tokens
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shares = None if shares is None or _all_once(shares, len(self.sizes)) else shares
        self.epoch = 0
        self.consumed = 0  # global batches of this epoch handed out to all ranks
        self._plan: Dict[int, BatchPlan] = {}

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch (unless a restored state says otherwise)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0

    def epoch_plan(self, epoch: int) -> BatchPlan:
        """All ranks' batches for `epoch`, identical on every rank and world size."""
        if epoch not in self._plan:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            pool = self._epoch_pairs(gen)
            if pool is None:  # every pair once: the permutation is the pool
                perm = _randperm(len(self.sizes), gen)
            else:
                perm = pool[_randperm(len(pool), gen)]
            # stable: equal sizes keep the random order of `perm` (numpy sorts small
            # integer keys by radix, in linear time)
            order = perm[np.argsort(self.sizes[perm], kind="stable")]
            plan = token_budget_batches(self.sizes, order, self.max_tokens)
            shuffle = _randperm(len(plan), gen)
            self._plan = {epoch: plan.reordered(shuffle)}
        return self._plan[epoch]

    def _epoch_pairs(self, gen: torch.Generator) -> Optional[np.ndarray]:
        """The pairs of this epoch, with repeats, by the corpora's weights (None: each
        pair once, as with one corpus of weight 1)."""
        if self.shares is None:
            return None
        index = _index_dtype(int(sum(w * (e - s) for s, e, w in self.shares)) + len(self.sizes))
        parts = []
        for start, end, weight in self.shares:
            whole, fraction = int(weight), weight - int(weight)
            pairs = np.arange(start, end, dtype=index)
            parts += [pairs] * whole
            extra = round(fraction * (end - start))
            if extra:
                drawn = torch.randperm(end - start, generator=gen)[:extra].numpy()
                parts.append(pairs[np.sort(drawn)])
        return np.concatenate(parts)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return math.ceil(len(self.epoch_plan(self.epoch)) / self.world_size)

    def remaining(self) -> int:
        """Batches of the current epoch still to come on this rank."""
        left = len(self.epoch_plan(self.epoch)) - self.consumed
        return max(0, math.ceil(left / self.world_size))

    def __iter__(self) -> Iterator[List[int]]:
        plan = self.epoch_plan(self.epoch)
        while self.consumed < len(plan):
            batch = plan[(self.consumed + self.rank) % len(plan)]
            self.consumed = min(self.consumed + self.world_size, len(plan))
            yield batch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(
                f"sampler state was saved with seed {state['seed']}, this run uses "
                f"{self.seed}; resume with the same seed."
            )
        self.epoch = state["epoch"]
        self.consumed = state["consumed"]
