"""Replacing a file or folder so that a reader sees the old one or the whole new one,
never half of it: write under a scratch name beside the target, then rename it over the
target (a rename within one folder is atomic on POSIX filesystems). A leaf: everything
that writes results, summaries, metrics, checkpoints or prepared data uses it.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_write(target: str | Path) -> Iterator[Path]:
    """Yield a scratch path beside `target` to write a file or a folder at; when the block
    ends, rename it over `target`. If the block (or the rename) fails, the scratch is
    removed and `target` is as it was.

    The scratch name carries the process id, so processes replacing the same target at
    once never write into each other's scratch; the last rename wins.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    _remove(scratch)  # left by a killed process whose id this one reuses
    try:
        yield scratch
        _rename_over(scratch, target)
    except BaseException:
        _remove(scratch)
        raise


def _rename_over(scratch: Path, target: Path) -> None:
    """os.replace; a folder cannot be renamed over a non-empty one, so a folder in the way
    is renamed aside first and then deleted."""
    if scratch.is_dir() and target.exists():
        aside = target.with_name(f".{target.name}.{os.getpid()}.old")
        os.replace(target, aside)
        _remove(aside)
    os.replace(scratch, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
