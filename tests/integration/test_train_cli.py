"""`python train.py ...` as a user runs it: start-up errors. (The smoke experiment's outputs
are checked on the run the README walkthrough trains, tests/integration/test_readme.py.)"""

import os
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT


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


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lr=-1", "optim.lr=-1.0 is invalid"),
        ("model.hidden_size=255", "model.hidden_size=255 is invalid"),
        ("data.train_src=/nonexistent/train.de", "data file not found: /nonexistent/train.de"),
        ("trainer.precision=bf16", "set strategy.precision=bf16 instead of trainer.precision"),
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
