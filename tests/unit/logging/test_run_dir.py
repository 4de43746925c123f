"""A rank > 0 adopts rank 0's run directory: its log file moves there under its own name,
its console says only warnings, tagged with the rank, and its scratch directory goes."""

import logging
from pathlib import Path

import pytest

from dist_lstm.config.resolvers import log_file_name, rank_log_name, rank_scoped_dir
from dist_lstm.logging.run_dir import adopt_main_run_dir


@pytest.fixture
def root_handlers():
    """The root logger's handlers, restored after the test."""
    root = logging.getLogger()
    saved = list(root.handlers)
    yield root
    for handler in root.handlers:
        if handler not in saved:
            handler.close()
    root.handlers = saved


def test_rank_one_moves_its_log_into_rank_zeros_directory(tmp_path, monkeypatch, root_handlers):
    monkeypatch.setenv("RANK", "1")
    rank_scoped_dir.cache_clear()
    own = Path(rank_scoped_dir(str(tmp_path / "main")))  # a scratch dir: rank 1 of a job
    rank_scoped_dir.cache_clear()
    main = tmp_path / "main"
    main.mkdir()
    assert rank_log_name("train") == log_file_name(1) == "train.rank1.log"
    console = logging.StreamHandler()
    root_handlers.handlers = [console, logging.FileHandler(own / log_file_name(1))]

    assert adopt_main_run_dir(own, main, rank=1) == main
    console_out, file_out = root_handlers.handlers
    assert console_out is console and console.level == logging.WARNING
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "slow disk", None, None)
    assert console.format(record) == "[rank 1] slow disk"
    assert Path(file_out.baseFilename) == main / "train.rank1.log"
    assert not own.exists()


def test_rank_zero_keeps_its_directory_and_the_plain_log_name(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    rank_scoped_dir.cache_clear()
    assert rank_scoped_dir(str(tmp_path)) == str(tmp_path)
    rank_scoped_dir.cache_clear()
    assert rank_log_name("train") == "train.log"
    assert adopt_main_run_dir(tmp_path, tmp_path / "other", rank=0) == tmp_path
