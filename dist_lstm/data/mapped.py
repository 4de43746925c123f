"""A prepared split read in place: pairs of id arrays by index, straight from its files.

Per process it holds only what batch planning needs (each pair's padded size, 2 bytes a
pair); ids and offsets are read with pread, so every rank shares them through the page
cache. Not numpy.memmap: the kernel maps neighbouring cached pages into the process on
every random read, which grew each rank's resident set by hundreds of MB (figures in
benchmarks/RESULTS.md). Pickling sends the folder, not the data, so DataLoader workers
open the files again.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from torch.utils.data import Dataset

OFFSET = np.dtype(np.int64)


def _npy_data_start(path: Path) -> int:
    """Where the array of a .npy file starts (after its header)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(handle)
        else:
            np.lib.format.read_array_header_2_0(handle)
        return handle.tell()


class MappedSplit(Dataset):
    """One split of a prepared folder (dist_lstm/data/prepared.py)."""

    def __init__(self, directory: Path, split: str, dtype: str):
        self.directory = Path(directory)
        self.split = split
        self.dtype = np.dtype(dtype)
        self._open()

    def _open(self) -> None:
        self._fds: Dict[str, int] = {}
        self._offset_start: Dict[str, int] = {}
        for side in ("src", "tgt"):
            offsets = self.directory / f"{self.split}.{side}.off.npy"
            self._fds[f"{side}.off"] = os.open(offsets, os.O_RDONLY)
            self._fds[side] = os.open(self.directory / f"{self.split}.{side}.bin", os.O_RDONLY)
            self._offset_start[side] = _npy_data_start(offsets)
        size = os.fstat(self._fds["src.off"]).st_size - self._offset_start["src"]
        self._pairs = size // OFFSET.itemsize - 1

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __del__(self) -> None:
        if getattr(self, "_fds", None):
            self.close()

    def __getstate__(self):
        return {"directory": self.directory, "split": self.split, "dtype": self.dtype}

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return self._pairs

    def _read(self, side: str, index: int) -> np.ndarray:
        where = self._offset_start[side] + index * OFFSET.itemsize
        start, end = np.frombuffer(os.pread(self._fds[f"{side}.off"], 16, where), OFFSET)
        size = self.dtype.itemsize
        raw = os.pread(self._fds[side], int(end - start) * size, int(start) * size)
        return np.frombuffer(raw, self.dtype).astype(np.int64)

    def __getitem__(self, index: int) -> Tuple[int, np.ndarray, np.ndarray]:
        """(index, source ids, target ids), the ids as int64 arrays without BOS/EOS."""
        if not 0 <= index < self._pairs:
            raise IndexError(f"pair {index} of {self._pairs}")
        return index, self._read("src", index), self._read("tgt", index)

    def sizes(self) -> np.ndarray:
        """Tokens each pair occupies in a padded batch (the longer side, plus BOS/EOS)."""
        return np.load(self.directory / f"{self.split}.sizes.npy")

    @functools.cached_property
    def references(self) -> List[str]:
        """The raw target sentences BLEU is scored against (validation only)."""
        text = (self.directory / f"{self.split}.ref.txt").read_text(encoding="utf-8")
        return text.split("\n")[: len(self)]
