"""How every entry point ends on an exception: `python train.py`, a launched worker, a
job of a sweep and the `dist-lstm` commands.

A UserError (something the user can fix; dist_lstm/errors.py) is said in one line and
the process exits with status 2, without a traceback. In a distributed job any other
failure is logged with its traceback and the rank it happened on, then the process exits
with status 1: the launcher sees the failed rank and stops the others instead of leaving
them waiting in a collective. A rank that only lost another rank (its process or node
died) says so in one line instead. In one process, a bug keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from dist_lstm.errors import UserError
from dist_lstm.strategy.base import peer_lost
from dist_lstm.topology import launcher_rank, launcher_world_size

log = logging.getLogger(__name__)

USER_ERROR_STATUS = 2
FAILED_RANK_STATUS = 1


def _log_error(message: str) -> None:
    log.error("%s", message)


def exit_status_for(exc: Exception, say: Callable[[str], None] = _log_error) -> Optional[int]:
    """Report `exc` as the policy says and return the status to exit with; None where
    its traceback is the useful report (a bug in one process): the caller re-raises.
    `say`: how the one line of a UserError is shown."""
    if isinstance(exc, UserError):
        say(str(exc))
        return USER_ERROR_STATUS
    if launcher_world_size() <= 1:
        return None
    if peer_lost(exc):
        log.error(
            "rank %d of %d lost contact with the rest of the job (%s): another process "
            "or node of it has died or become unreachable. The checkpoints already "
            "complete are intact; once every node is back, start the job again with "
            "resume=auto (a SLURM job with --requeue is requeued by SLURM itself).",
            launcher_rank(),
            launcher_world_size(),
            str(exc).splitlines()[0][:300],
        )
    else:
        log.exception("rank %d of %d failed", launcher_rank(), launcher_world_size())
    return FAILED_RANK_STATUS


@contextmanager
def user_errors(say: Callable[[str], None] = _log_error) -> Iterator[None]:
    """Run the block under the exit policy: the process exits with its status."""
    try:
        yield
    except Exception as exc:
        status = exit_status_for(exc, say)
        if status is None:
            raise
        sys.exit(status)
