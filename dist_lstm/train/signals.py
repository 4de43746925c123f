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

import ctypes
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Callable, Dict, List, Optional

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PARENT_AT_START = os.getppid()  # read at import, before any launcher could have died


def stop_with_launcher() -> None:
    """Have the kernel send this worker SIGTERM when the process that started it dies.

    torchrun's agent (and the elastic launch API behind `launcher.nproc_per_node`) starts
    every worker in a session of its own, so a launcher killed by SIGKILL or the OOM
    killer, or lost with its node, left workers training on as orphans, beside whatever
    job was started next in the same run directory. With this they checkpoint and stop
    like after any SIGTERM (or end at once if still starting up). Linux only.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning(
            "could not ask to be stopped with the launcher (prctl errno %d)", ctypes.get_errno()
        )
        return
    if os.getppid() != _PARENT_AT_START:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def exit_status(signum: int) -> int:
    return 128 + signum


class StopRequest:
    """Records the first stop signal received while installed (main thread only)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: Dict[int, object] = {}
        self._listeners: List[Callable[[int], None]] = []

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(signum)` at the first stop signal, e.g. to tell other jobs that
        this one is about to end (logging/run_lock.py)."""
        self._listeners.append(listener)

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
            for listener in self._listeners:
                listener(signum)
        else:
            log.warning("%s received: already stopping, the checkpoint is being written", name)
