"""`python train.py ...` as a user runs it: the smoke experiment and start-up errors."""

import json
import os
import subprocess
import sys

import pytest

from dist_lstm.checkpoint import load_checkpoint
from tests.conftest import ROOT


def run_train(*overrides, run_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_smoke_experiment_writes_every_output(tmp_path):
    run_dir = tmp_path / "smoke"
    proc = run_train("experiment=smoke", run_dir=run_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in (
        ".hydra/config.yaml",
        "metrics.jsonl",
        "loss.png",
        "train.log",
        "tokenizer/tokenizer.json",
        "checkpoints/last/COMPLETE",
        "checkpoints/best/COMPLETE",
    ):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    val_records = [r for r in records if "val_bleu" in r]
    assert train_records and all("step" in r for r in train_records)
    assert [r["step"] for r in val_records] == [75, 150]
    assert all({"val_loss", "val_bleu", "val_chrf"} <= r.keys() for r in val_records)
    assert train_records[-1]["loss"] < train_records[0]["loss"]
    assert any("test_bleu" in r for r in records)
    last = load_checkpoint(run_dir / "checkpoints" / "last")
    assert last["step"] == 150 and last["config"]["model"]["hidden_size"] == 128
    log = (run_dir / "train.log").read_text()
    assert "validation step 150" in log


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lr=-1", "optim.lr=-1.0 is invalid"),
        ("model.hidden_size=255", "model.hidden_size=255 is invalid"),
        ("data.train_src=/nonexistent/train.de", "data file not found: /nonexistent/train.de"),
    ],
)
def test_bad_input_exits_with_one_clear_message(tmp_path, override, message):
    proc = run_train("experiment=smoke", override, run_dir=tmp_path / "bad")
    assert proc.returncode == 2
    output = " ".join((proc.stdout + proc.stderr).split())
    assert message in output
    assert "Traceback" not in output


def test_misspelt_key_fails_at_start_up(tmp_path):
    proc = run_train("trainer.max_stepz=5", run_dir=tmp_path / "typo")
    assert proc.returncode != 0
    assert "max_stepz" in proc.stderr
    assert not (tmp_path / "typo" / "metrics.jsonl").exists()


@pytest.mark.parametrize("where", ["/proc/dist-lstm-test", "under-a-file"])
def test_run_dir_that_cannot_be_created_is_named(tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("")
        where = str(tmp_path / "file" / "run")
    proc = run_train("experiment=smoke", run_dir=where)
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, output
    assert f"hydra.run.dir={where} cannot be created" in output
    assert "choose a writable hydra.run.dir" in output
    assert "Traceback" not in output
    printed = run_train("experiment=smoke", "--cfg", "job", run_dir=where)  # makes no dir
    assert printed.returncode == 0 and "seed:" in printed.stdout
