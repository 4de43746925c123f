"""Stop requests by signal: SIGTERM (schedulers, torchrun), SIGUSR1 (SLURM's warning
before a time limit or preemption, `--signal=USR1@120`) and SIGINT (Ctrl-C).

The handler only records the signal; the trainer finishes its current optimizer step,
agrees with the other ranks, writes a checkpoint and stops, and the process exits with
128 + the signal's number (143 for SIGTERM, 138 for SIGUSR1, 130 for SIGINT), the usual
status of a process ended by that signal, so wrappers can tell a preempted run from a
finished one. A second signal while the checkpoint is written is logged and ignored, so
it cannot cut the commit short. `resume=auto` continues the run.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Dict, Optional

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def exit_status(signum: int) -> int:
    return 128 + signum


class StopRequest:
    """Records the first stop signal received while installed (main thread only)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: Dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            log.warning("%s received: checkpointing after the current step, then stopping", name)
        else:
            log.warning("%s received: already stopping, the checkpoint is being written", name)
