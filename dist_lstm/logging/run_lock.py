"""One writing job per run directory.

Two jobs in one run directory damage each other: each removes the other's half-written
checkpoints at start-up, both append to metrics.jsonl, and a resume may read a checkpoint
that is still being written. So rank 0 claims the directory in `RUN_DIR/.writer.json`
(job, host, process, a heartbeat refreshed every HEARTBEAT_S seconds) before it touches
anything. A job that finds the claim held by another live job stops, naming it; the
same job's restarts (see topology.job_identity) take it over. A holder that died stops
counting at once on the same host (its process is gone) and after STALE_S seconds
without a heartbeat from another host (a node lost). A holder that has been told to stop
(a signal, or its launcher killed) marks its claim `stopping`; a new job then waits up to
STOPPING_WAIT_S for it to write its last checkpoint and go, so a job restarted at once
after a crash continues instead of being refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from dist_lstm.atomic import atomic_write
from dist_lstm.errors import UserError

log = logging.getLogger(__name__)

CLAIM_FILE = ".writer.json"
HEARTBEAT_S = 10.0
STALE_S = 30.0  # three missed heartbeats
STOPPING_WAIT_S = 120.0  # a stopping holder's last step and checkpoint
POLL_S = 0.5


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunDirectoryClaim:
    """Held by rank 0 from start-up to exit; `claim()` refuses a directory in use."""

    def __init__(self, run_dir: Path, job: str, clock: Callable[[], float] = time.time):
        self.path = Path(run_dir) / CLAIM_FILE
        self.job = job
        self.clock = clock
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._stopping = False  # once marked, every later heartbeat keeps the mark
        self._writing = threading.Lock()  # the heartbeat and a stop signal both write
        self._beating: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ claiming
    def claim(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        give_up = time.monotonic() + STOPPING_WAIT_S
        waiting = False
        while True:
            holder = self._take_unless_held()
            if holder is None:
                return
            if not holder.get("stopping") or time.monotonic() > give_up:
                raise UserError(self._in_use_message(holder))
            if not waiting:
                log.warning("run directory: waiting for %s to finish stopping", _who(holder))
                waiting = True
            time.sleep(POLL_S)

    def mark_stopping(self) -> None:
        """Tell a job started meanwhile that this one is about to release the directory."""
        try:
            self._write(stopping=True)
        except OSError as exc:
            log.warning("run directory: could not mark the claim as stopping (%s)", exc)

    def start_heartbeat(self) -> None:
        self._beating = threading.Thread(target=self._beat, name="run-dir-heartbeat", daemon=True)
        self._beating.start()

    def release(self) -> None:
        self._stop.set()
        if self._beating is not None:
            self._beating.join(timeout=HEARTBEAT_S)
        holder = self._read()
        if holder is not None and (holder.get("pid"), holder.get("host")) == (self.pid, self.host):
            self.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ internals
    def _take_unless_held(self) -> Optional[Dict[str, Any]]:
        """Write this job's claim and return None, or return the live holder of another
        job, under an flock of the directory (one reader-writer of the claim at a time)."""
        guard = os.open(self.path.parent, os.O_RDONLY)  # the directory itself: no extra file
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            holder = self._read()
            if holder is not None and holder.get("job") != self.job and self._alive(holder):
                return holder
            if holder is not None and holder.get("job") != self.job:
                log.warning("run directory: taking over from %s, which is gone", _who(holder))
            self._write()
            return None
        finally:
            os.close(guard)  # closing drops the lock

    def _alive(self, holder: Dict[str, Any]) -> bool:
        if holder.get("host") == self.host:
            return _process_alive(int(holder.get("pid", 0)))
        return self.clock() - float(holder.get("heartbeat", 0)) < STALE_S

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write()
            except OSError as exc:  # a full or flaky disk must not stop training
                log.warning("run directory: heartbeat not written (%s)", exc)

    def _read(self) -> Optional[Dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # none, or torn by a writer that died: no live holder wrote it

    def _write(self, stopping: bool = False) -> None:
        record = {"job": self.job, "host": self.host, "pid": self.pid, "heartbeat": self.clock()}
        self._stopping = self._stopping or stopping
        if self._stopping:
            record["stopping"] = True
        with self._writing, atomic_write(self.path) as scratch:  # one scratch per process
            scratch.write_text(json.dumps(record))

    def _in_use_message(self, holder: Dict[str, Any]) -> str:
        age = self.clock() - float(holder.get("heartbeat", 0))
        return (
            f"run directory {self.path.parent} is in use by {_who(holder)} (heartbeat "
            f"{age:.0f} s ago). Two jobs writing one run directory damage each other's "
            "checkpoints: wait for that job to end (or stop it), or give this one another "
            f"hydra.run.dir. A holder that died stops counting at once on its own host and "
            f"{STALE_S:.0f} s after its last heartbeat from another."
        )


def _who(holder: Dict[str, Any]) -> str:
    return f"{holder.get('job')} (process {holder.get('pid')} on {holder.get('host')})"
