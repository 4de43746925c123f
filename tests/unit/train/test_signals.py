"""Stop requests by signal, sent to this very process: the first one is kept, a second
is logged and ignored, and the handlers that were there before come back."""

import logging
import os
import signal
import threading

import pytest

from dist_lstm.train.signals import STOP_SIGNALS, StopRequest, exit_status


def previous_handler(signum, frame):
    """Stands for whatever was installed before (pytest's, a launcher's)."""
    raise AssertionError(f"signal {signum} reached the handler outside the StopRequest")


@pytest.fixture(autouse=True)
def _own_handlers():
    """Known handlers during each test; pytest's own handlers afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, previous_handler)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("first", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_the_first_signal_is_kept_and_a_second_is_logged_and_ignored(first, caplog):
    second = signal.SIGTERM if first != signal.SIGTERM else signal.SIGUSR1
    caplog.set_level(logging.WARNING, logger="dist_lstm.train.signals")
    with StopRequest() as stop:
        assert stop.signum is None
        os.kill(os.getpid(), first)
        assert stop.signum == first
        os.kill(os.getpid(), second)  # e.g. scancel while the checkpoint is written
        assert stop.signum == first
    name, other = signal.Signals(first).name, signal.Signals(second).name
    assert f"{name} received: checkpointing after the current step" in caplog.text
    assert f"{other} received: already stopping" in caplog.text


def test_the_previous_handlers_come_back_on_exit():
    with StopRequest():
        assert all(signal.getsignal(s) is not previous_handler for s in STOP_SIGNALS)
    assert all(signal.getsignal(s) is previous_handler for s in STOP_SIGNALS)


def test_outside_the_main_thread_nothing_is_installed():
    """signal.signal raises in other threads; there the request is inert, not an error."""
    seen = []

    def enter_and_look():
        with StopRequest() as stop:
            seen.append([signal.getsignal(s) for s in STOP_SIGNALS])
            seen.append(stop.signum)

    thread = threading.Thread(target=enter_and_look)
    thread.start()
    thread.join()
    assert seen == [[previous_handler] * len(STOP_SIGNALS), None]


def test_the_exit_status_is_that_of_a_process_killed_by_the_signal():
    assert exit_status(signal.SIGTERM) == 143
    assert exit_status(signal.SIGUSR1) == 128 + signal.SIGUSR1
    assert exit_status(signal.SIGINT) == 130
