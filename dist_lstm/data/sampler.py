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
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, List, Sequence

import torch
from torch.utils.data import Sampler


def token_budget_batches(
    sizes: torch.Tensor, order: torch.Tensor, max_tokens: int
) -> List[List[int]]:
    """Cut `order` (indices sorted by size) into batches whose padded size fits the budget.

    A batch's padded size is len(batch) * max(size in batch). An item larger than the
    budget on its own still gets a batch of one (validation keeps long sentences).
    """
    batches: List[List[int]] = []
    current: List[int] = []
    longest = 0
    for index in order.tolist():
        size = int(sizes[index])
        new_longest = max(longest, size)
        if current and new_longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, new_longest = [], size
        current.append(index)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


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
    """

    def __init__(
        self,
        sizes: Sequence[int],
        max_tokens: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.sizes = torch.as_tensor(list(sizes), dtype=torch.long)
        self.max_tokens = max_tokens
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.consumed = 0  # global batches of this epoch handed out to all ranks
        self._cache: Dict[int, List[List[int]]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch (unless a restored state says otherwise)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0

    def _global_batches(self, epoch: int) -> List[List[int]]:
        """All ranks' batches for `epoch`, identical on every rank and world size."""
        if epoch in self._cache:
            return self._cache[epoch]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.sizes), generator=gen)
        order = perm[torch.sort(self.sizes[perm], stable=True).indices]
        batches = token_budget_batches(self.sizes, order, self.max_tokens)
        batches = [batches[i] for i in torch.randperm(len(batches), generator=gen)]
        self._cache = {epoch: batches}
        return batches

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return math.ceil(len(self._global_batches(self.epoch)) / self.world_size)

    def remaining(self) -> int:
        """Batches of the current epoch still to come on this rank."""
        left = len(self._global_batches(self.epoch)) - self.consumed
        return max(0, math.ceil(left / self.world_size))

    def __iter__(self) -> Iterator[List[int]]:
        batches = self._global_batches(self.epoch)
        while self.consumed < len(batches):
            batch = batches[(self.consumed + self.rank) % len(batches)]
            self.consumed = min(self.consumed + self.world_size, len(batches))
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
