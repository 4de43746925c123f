"""A prepared split read through numpy.memmap: pairs of id arrays by index.

Per process it holds only what batch planning needs (each pair's padded size, a few bytes
a pair); the token ids stay in the files and the page cache shares them between ranks.
Pickling it sends its folder, not its data, so DataLoader workers open the files again.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Tuple

import numpy as np
from torch.utils.data import Dataset


class MappedSplit(Dataset):
    """One split of a prepared folder (dist_lstm/data/prepared.py)."""

    def __init__(self, directory: Path, split: str, dtype: str):
        self.directory = Path(directory)
        self.split = split
        self.dtype = dtype
        self._open()

    def _open(self) -> None:
        self.ids = {side: self._tokens(side) for side in ("src", "tgt")}
        self.offsets = {
            side: np.load(self.directory / f"{self.split}.{side}.off.npy", mmap_mode="r")
            for side in ("src", "tgt")
        }

    def _tokens(self, side: str) -> np.ndarray:
        path = self.directory / f"{self.split}.{side}.bin"
        if path.stat().st_size == 0:  # mmap cannot map an empty file
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r")

    def __getstate__(self):
        return {"directory": self.directory, "split": self.split, "dtype": self.dtype}

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return len(self.offsets["src"]) - 1

    def __getitem__(self, index: int) -> Tuple[int, np.ndarray, np.ndarray]:
        """(index, source ids, target ids), the ids as int64 arrays without BOS/EOS."""
        pair = []
        for side in ("src", "tgt"):
            start, end = self.offsets[side][index : index + 2]
            pair.append(np.asarray(self.ids[side][start:end], dtype=np.int64))
        return index, pair[0], pair[1]

    def sizes(self) -> np.ndarray:
        """Tokens each pair occupies in a padded batch (the longer side, plus BOS/EOS)."""
        return np.load(self.directory / f"{self.split}.sizes.npy")

    @functools.cached_property
    def references(self) -> List[str]:
        """The raw target sentences BLEU is scored against (validation only)."""
        text = (self.directory / f"{self.split}.ref.txt").read_text(encoding="utf-8")
        return text.split("\n")[: len(self)]
