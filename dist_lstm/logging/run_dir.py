"""One run directory for all ranks, and a log file per rank inside it.

Hydra starts in every process a launcher creates. Left alone, each rank would make its own
timestamped directory and write its own `.hydra/`. Instead, ranks > 0 start in a private
scratch directory (resolver `rank_scoped_dir`), write no `.hydra/` (`rank_zero_only`), and,
once the process group is up, adopt rank 0's directory (`adopt_main_run_dir`), where each
keeps its own log file (`rank_log_name`) for debugging.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from dist_lstm.topology import launcher_rank

log = logging.getLogger(__name__)

CONSOLE_HANDLER_TYPES = ("RichHandler", "StreamHandler")


@functools.lru_cache(maxsize=None)
def rank_scoped_dir(default: str) -> str:
    """Resolver: `default` on rank 0; a scratch folder on other ranks (cached: Hydra
    resolves the run directory several times and must get the same answer)."""
    rank = launcher_rank()
    if rank == 0:
        return default
    return tempfile.mkdtemp(prefix=f"dist-lstm-rank{rank}-")


def rank_zero_only(value: Any) -> Optional[Any]:
    """Resolver: `value` on rank 0, null elsewhere (e.g. hydra.output_subdir)."""
    return value if launcher_rank() == 0 else None


def rank_log_name(job_name: str) -> str:
    """Resolver: train.log on rank 0, train.rank<N>.log on the others."""
    rank = launcher_rank()
    return f"{job_name}.log" if rank == 0 else f"{job_name}.rank{rank}.log"


def adopt_main_run_dir(own_dir: Path, main_dir: Path, rank: int) -> Path:
    """On ranks > 0: move logging into rank 0's run directory, quiet the console (only
    warnings and errors, tagged with the rank) and remove the scratch directory."""
    if rank == 0:
        return own_dir
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ in CONSOLE_HANDLER_TYPES:
            handler.setLevel(logging.WARNING)
            handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s"))
        elif (
            isinstance(handler, logging.FileHandler)
            and Path(handler.baseFilename).parent != main_dir
        ):
            name = Path(handler.baseFilename).name
            root.removeHandler(handler)
            handler.close()
            replacement = logging.FileHandler(main_dir / name)
            replacement.setFormatter(handler.formatter)
            root.addHandler(replacement)
    if own_dir.resolve() != main_dir.resolve() and own_dir.name.startswith(
        f"dist-lstm-rank{rank}-"
    ):
        shutil.rmtree(own_dir, ignore_errors=True)
    return main_dir
