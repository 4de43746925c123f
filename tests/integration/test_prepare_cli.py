"""`dist-lstm prepare` ahead of training: train.py with the same overrides maps the
prepared files instead of tokenizing again."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SHORT_SMOKE_RUN


def run(args, tmp_path):
    env = {**os.environ, "DIST_LSTM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_prepare_then_train_maps_the_prepared_files(tmp_path):
    overrides = list(SHORT_SMOKE_RUN)
    prepared = run(["-m", "dist_lstm", "prepare", *overrides], tmp_path)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    folder = prepared.stdout.strip().split(":")[0]
    assert Path(folder).parent == tmp_path / "cache" / "prepared"
    assert "200 training pairs" in prepared.stdout
    trained = run(["train.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"data: {folder}" in log and "prepared " not in log  # mapped, not prepared again
    again = run(["-m", "dist_lstm", "prepare", *overrides], tmp_path)
    assert again.returncode == 0 and "tokenizer: " not in again.stderr  # nothing redone
