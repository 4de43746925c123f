"""One writing job per run directory: a live holder of another job is refused by name,
the same job takes its claim back, and a dead holder stops counting."""

import json
import os
import subprocess
import sys

import pytest

from dist_lstm.errors import UserError
from dist_lstm.logging import run_lock
from dist_lstm.logging.run_lock import CLAIM_FILE, STALE_S, RunDirectoryClaim


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def holder(tmp_path, **fields):
    record = {"job": "slurm job 7", "host": "elsewhere", "pid": 4242, "heartbeat": 1000.0}
    (tmp_path / CLAIM_FILE).write_text(json.dumps({**record, **fields}))


def test_a_claim_is_written_and_released(tmp_path):
    claim = RunDirectoryClaim(tmp_path, "process 1 on here")
    claim.claim()
    assert json.loads((tmp_path / CLAIM_FILE).read_text())["job"] == "process 1 on here"
    claim.release()
    assert not (tmp_path / CLAIM_FILE).exists()


def test_another_live_job_on_this_host_is_refused_by_name(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim = RunDirectoryClaim(tmp_path, "process 1 on here")
        holder(tmp_path, host=claim.host, pid=sleeper.pid, heartbeat=claim.clock())
        with pytest.raises(UserError, match=f"slurm job 7 \\(process {sleeper.pid} on "):
            claim.claim()
        assert json.loads((tmp_path / CLAIM_FILE).read_text())["pid"] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
    claim.claim()  # its process is gone: the claim is free at once
    assert json.loads((tmp_path / CLAIM_FILE).read_text())["job"] == "process 1 on here"


def test_a_holder_on_another_host_counts_until_its_heartbeat_is_stale(tmp_path):
    clock = Clock()
    holder(tmp_path, heartbeat=clock.now)
    claim = RunDirectoryClaim(tmp_path, "process 1 on here", clock=clock)
    clock.now += STALE_S - 1
    with pytest.raises(UserError, match="hydra.run.dir"):
        claim.claim()
    clock.now += 2  # the node is lost: no heartbeat for STALE_S seconds
    claim.claim()
    assert json.loads((tmp_path / CLAIM_FILE).read_text())["job"] == "process 1 on here"


def test_the_same_job_takes_its_claim_back_from_a_live_holder(tmp_path):
    holder(tmp_path, heartbeat=Clock()())  # a requeued SLURM job's previous attempt
    RunDirectoryClaim(tmp_path, "slurm job 7", clock=Clock()).claim()


def test_the_heartbeat_refreshes_the_claim(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.01)
    clock = Clock()
    claim = RunDirectoryClaim(tmp_path, "process 1 on here", clock=clock)
    claim.claim()
    clock.now += 5
    claim.start_heartbeat()
    try:
        for _ in range(1000):  # until a beat lands; each beat is 10 ms apart
            if json.loads((tmp_path / CLAIM_FILE).read_text())["heartbeat"] == clock.now:
                break
            claim._stop.wait(0.01)
        assert json.loads((tmp_path / CLAIM_FILE).read_text())["heartbeat"] == clock.now
    finally:
        claim.release()


def test_a_stopping_holder_is_waited_for_and_the_claim_taken_when_it_has_gone(tmp_path, caplog):
    import threading

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    claim = RunDirectoryClaim(tmp_path, "process 1 on here")
    holder(tmp_path, host=claim.host, pid=sleeper.pid, heartbeat=claim.clock(), stopping=True)
    waiter = threading.Thread(target=claim.claim)
    with caplog.at_level("WARNING", logger="dist_lstm.logging.run_lock"):
        waiter.start()
        for _ in range(600):  # until the claim says it waits for the holder
            if "waiting for slurm job 7" in caplog.text:
                break
            waiter.join(0.05)
        assert "waiting for slurm job 7" in caplog.text and waiter.is_alive()
        sleeper.kill()  # the holder wrote its last checkpoint and went
        sleeper.wait()
        waiter.join(30)
    assert not waiter.is_alive()
    assert json.loads((tmp_path / CLAIM_FILE).read_text())["job"] == "process 1 on here"


def test_a_holder_stopping_for_too_long_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "STOPPING_WAIT_S", 0.2)
    claim = RunDirectoryClaim(tmp_path, "process 1 on here")
    holder(tmp_path, host=claim.host, pid=os.getpid(), heartbeat=claim.clock(), stopping=True)
    with pytest.raises(UserError, match="is in use by slurm job 7"):
        claim.claim()


def test_a_stop_signal_marks_the_claim_stopping_in_every_later_heartbeat(tmp_path):
    claim = RunDirectoryClaim(tmp_path, "process 1 on here")
    claim.claim()
    claim.mark_stopping()
    claim._write()  # a heartbeat after the mark
    assert json.loads((tmp_path / CLAIM_FILE).read_text())["stopping"] is True
