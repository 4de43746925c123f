"""`dist-lstm prepare` ahead of training: train.py with the same overrides maps the
prepared files instead of tokenizing again; `--force` rewrites an explicit folder that no
longer fits; a folder that cannot be created is named, without a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dist_lstm import cli
from dist_lstm.config.compose import compose_config
from dist_lstm.data import prepared
from dist_lstm.data.build import build_data
from dist_lstm.data.corpus import sha256_of
from tests.helpers.configs import SHORT_SMOKE_RUN, TINY_RUN
from tests.helpers.corpus import reversal_corpus, write_lines
from tests.helpers.paths import ROOT


def run(args, tmp_path):
    # COLUMNS: the console log must not wrap a long path across lines.
    env = {
        **os.environ,
        "DIST_LSTM_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "500",
    }
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


def prepare_command(args, capsys):
    """`dist-lstm prepare ARGS` in this process: its exit status and stderr."""
    code = cli.main(["prepare", *map(str, args)])
    return code, capsys.readouterr().err


def test_force_rewrites_an_explicit_folder_that_no_longer_fits(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "prep"
    overrides = [
        *reversal_corpus(tmp_path, 0, {"train": 40, "valid": 6}, "abcde", 4),
        *TINY_RUN,
        "data.tokenizer.vocab_size=30",
        f"data.prepared_dir={folder}",
    ]
    assert prepare_command(overrides, capsys)[0] == 0
    written = (folder / "manifest.json").read_bytes()
    targets = tmp_path / "train.tgt"
    write_lines(targets, [line.upper() for line in targets.read_text().splitlines()])

    code, err = prepare_command(overrides, capsys)
    assert code == 2
    assert f"data.train_tgt={targets} changed since it was prepared" in err and "--force" in err
    assert (folder / "manifest.json").read_bytes() == written  # left as it was

    assert prepare_command(["--force", *overrides], capsys)[0] == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["inputs"]["data.train_tgt"]["sha256"] == sha256_of(targets)

    # Now it fits: prepare and training's data path take the folder as it is.
    monkeypatch.setattr(prepared, "prepare", lambda *a: pytest.fail("prepared again"))
    assert prepare_command(overrides, capsys)[0] == 0
    assert len(build_data(OmegaConf.to_object(compose_config(overrides).data)).train) == 40


def assert_named_without_traceback(result, folder) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert f"cannot create {folder}" in output and "Set data.prepared_dir to a folder" in output
    assert "Traceback" not in output


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_prepare_into_a_folder_that_cannot_be_created_names_it(tmp_path):
    folder = "/proc/forbidden/prep"  # nothing can be made in /proc, not even by root
    overrides = [*SHORT_SMOKE_RUN, f"data.prepared_dir={folder}"]
    assert_named_without_traceback(
        run(["-m", "dist_lstm", "prepare", *overrides], tmp_path), folder
    )


def test_training_into_a_folder_that_cannot_be_created_names_it(tmp_path):
    folder = write_lines(tmp_path / "a-file", []) / "prep"  # under a file, even for root
    overrides = [*SHORT_SMOKE_RUN, f"data.prepared_dir={folder}", f"hydra.run.dir={tmp_path}/run"]
    result = run(["train.py", *overrides], tmp_path)
    assert_named_without_traceback(result, folder)
    assert f"({folder.parent} is a file)" in (tmp_path / "run" / "train.log").read_text()
