"""One run directory for all ranks, and a log file per rank inside it.

Ranks > 0 start in a private scratch directory (`make_scratch_dir` in the config
resolvers, dist_lstm/config/resolvers.py, which own the names Hydra starts with) and, once
the process group is up, adopt rank 0's directory here, where each keeps its own log file
(`log_file_name`) for debugging. This module owns the console format of ranks > 0.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from dist_lstm.config.resolvers import scratch_prefix

log = logging.getLogger(__name__)

CONSOLE_HANDLER_TYPES = ("RichHandler", "StreamHandler")


def quiet_console(handler: logging.Handler, rank: int) -> None:
    """A console handler of rank > 0: warnings and errors only, tagged with the rank, so
    N ranks do not print every line N times."""
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s"))


def adopt_main_run_dir(own_dir: Path, main_dir: Path, rank: int) -> Path:
    """On ranks > 0: move logging into rank 0's run directory, quiet the console (only
    warnings and errors, tagged with the rank) and remove the scratch directory."""
    if rank == 0:
        return own_dir
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ in CONSOLE_HANDLER_TYPES:
            quiet_console(handler, rank)
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
    if own_dir.resolve() != main_dir.resolve() and own_dir.name.startswith(scratch_prefix(rank)):
        shutil.rmtree(own_dir, ignore_errors=True)
    return main_dir
