"""The Hydra resolvers conf/ uses, registered with the schema (`register_configs`).

Hydra starts in every process a launcher creates. Left alone, each rank would make its own
timestamped directory and write its own `.hydra/`. Instead ranks > 0 start in a private
scratch directory (`rank_scoped_dir`), write no `.hydra/` (`rank_zero_only`) and log to
`train.rank<N>.log` (`rank_log_name`); dist_lstm/logging/run_dir.py then moves them into
rank 0's directory once the process group is up. The names are owned here
(`log_file_name`, `scratch_prefix`), where Hydra first needs them.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from dist_lstm.topology import launcher_rank

EMBEDDED_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "embedded"


def log_file_name(rank: int, job_name: str = "train") -> str:
    """train.log on rank 0, train.rank<N>.log on the others (`job_name`: Hydra's job name,
    the script's name)."""
    return f"{job_name}.log" if rank == 0 else f"{job_name}.rank{rank}.log"


def make_scratch_dir(rank: int) -> str:
    """A private directory where rank > 0 starts, before it knows rank 0's run directory."""
    return tempfile.mkdtemp(prefix=scratch_prefix(rank))


def scratch_prefix(rank: int) -> str:
    return f"dist-lstm-rank{rank}-"


def embedded_data(name: str) -> str:
    """`${embedded_data:multi30k}`: the dataset folder shipped in the package."""
    return str(EMBEDDED_DATA_DIR / name)


@functools.lru_cache(maxsize=None)
def rank_scoped_dir(default: str) -> str:
    """Resolver: `default` on rank 0; a scratch folder on other ranks (cached: Hydra
    resolves the run directory several times and must get the same answer)."""
    rank = launcher_rank()
    if rank == 0:
        return default
    return make_scratch_dir(rank)


def rank_zero_only(value: Any) -> Optional[Any]:
    """Resolver: `value` on rank 0, null elsewhere (e.g. hydra.output_subdir)."""
    return value if launcher_rank() == 0 else None


def rank_log_name(job_name: str) -> str:
    """Resolver: train.log on rank 0, train.rank<N>.log on the others."""
    return log_file_name(launcher_rank(), job_name)


RESOLVERS: Dict[str, Callable[..., Any]] = {
    "embedded_data": embedded_data,
    "rank_scoped_dir": rank_scoped_dir,
    "rank_zero_only": rank_zero_only,
    "rank_log_name": rank_log_name,
}
