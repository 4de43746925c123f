"""The exit policy of the entry points: a UserError is one line and status 2; in a
distributed job any other failure names its rank and exits 1; in one process a bug keeps
its traceback."""

import logging

import pytest

from dist_lstm.errors import ConfigError
from dist_lstm.exit_policy import user_errors


def test_a_user_error_is_one_line_and_status_2(caplog):
    with pytest.raises(SystemExit) as stop, user_errors():
        raise ConfigError("optim.lr=-1 is invalid: use a positive rate.")
    assert stop.value.code == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["optim.lr=-1 is invalid: use a positive rate."]
    assert errors[0].exc_info is None  # no traceback


def test_a_bug_in_one_process_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ZeroDivisionError), user_errors():
        1 / 0


@pytest.mark.parametrize(
    "failure, said",
    [
        (ZeroDivisionError("division by zero"), "rank 1 of 2 failed"),
        (RuntimeError("Connection closed by peer [127.0.0.1]:29500"), "lost contact"),
    ],
)
def test_a_failure_in_a_distributed_job_names_the_rank_and_exits_1(
    monkeypatch, caplog, failure, said
):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as stop, user_errors():
        raise failure
    assert stop.value.code == 1
    assert said in caplog.text
