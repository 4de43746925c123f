"""Length-bucketed token-budget batches, sharded across ranks, with a resumable position.

Why this shape:
- Sorting by length before cutting batches keeps padding (wasted compute) low; a random
  permutation before the stable sort breaks ties differently every epoch, and the batch
  order is shuffled, so batches differ from epoch to epoch.
- Randomness comes only from a generator seeded with (seed, epoch), never the global RNG,
  so every rank computes the same batch list independently and a resumed run gets the
  same batches as an uninterrupted one.
- Every rank must run the same number of steps or collective ops hang; the batch list is
  padded (by repeating its first batches) to a multiple of the world size, then dealt out
  round-robin, so each rank gets distinct batches and the same count.
"""

from __future__ import annotations

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

    Call `set_epoch(e)` before iterating each epoch. `state_dict()` records the epoch and
    how many of this epoch's batches were consumed, and `load_state_dict()` makes the next
    iteration continue right after them.
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
        self.position = 0  # batches of this epoch already handed out on this rank
        self._cache: Dict[int, List[List[int]]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch (unless a restored state says otherwise)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def _global_batches(self, epoch: int) -> List[List[int]]:
        """All ranks' batches for `epoch`, identical on every rank, padded to world size."""
        if epoch in self._cache:
            return self._cache[epoch]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.sizes), generator=gen)
        order = perm[torch.sort(self.sizes[perm], stable=True).indices]
        batches = token_budget_batches(self.sizes, order, self.max_tokens)
        batches = [batches[i] for i in torch.randperm(len(batches), generator=gen)]
        remainder = len(batches) % self.world_size
        if remainder:
            batches += batches[: self.world_size - remainder]
        self._cache = {epoch: batches}
        return batches

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return len(self._global_batches(self.epoch)) // self.world_size

    def __iter__(self) -> Iterator[List[int]]:
        mine = self._global_batches(self.epoch)[self.rank :: self.world_size]
        while self.position < len(mine):
            batch = mine[self.position]
            self.position += 1
            yield batch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(
                f"sampler state was saved with seed {state['seed']}, this run uses "
                f"{self.seed}; resume with the same seed."
            )
        self.epoch = state["epoch"]
        self.position = state["position"]
