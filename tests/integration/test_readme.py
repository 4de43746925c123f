"""The README's walkthroughs (inference, then resume), run exactly as written."""

import json
import os
import re
import subprocess
from pathlib import Path

from dist_lstm.checkpoint import load_checkpoint
from tests.helpers.paths import ROOT

MARKER = "<!-- the block below is run as written by tests/integration/test_readme.py -->"


def readme_blocks() -> str:
    """Every marked bash block, in README order."""
    parts = (ROOT / "README.md").read_text().split(MARKER)[1:]
    return "".join(re.search(r"```bash\n(.*?)```", part, re.S).group(1) for part in parts)


def assert_every_output_of_a_smoke_run(run_dir: Path) -> None:
    """`python train.py experiment=smoke`: config, metrics, plot, log, tokenizer, checkpoints."""
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
    assert "validation step 150" in (run_dir / "train.log").read_text()


def test_readme_commands_work_as_written(tmp_path):
    # The commands use repository-relative paths: give them a scratch copy of the layout.
    for name in ("train.py", "conf", "dist_lstm"):
        (tmp_path / name).symlink_to(ROOT / name)
    script = "set -eu\n" + readme_blocks()  # no pipefail: `zcat | head` ends zcat early
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_every_output_of_a_smoke_run(tmp_path / "outputs" / "smoke")
    assert len((tmp_path / "sample.en").read_text().splitlines()) == 20
    assert proc.stdout.count("BLEU = ") == 3 and '"bleu_signature"' in proc.stdout
    assert "best: --beam" in proc.stdout  # tune-search
    aligned = (tmp_path / "aligned.en").read_text().splitlines()
    assert len(aligned) == 20 and all("\t" in line for line in aligned)
    assert len(list((tmp_path / "plots").glob("line_*.png"))) == 10
    assert (tmp_path / "outputs" / "smoke" / "averaged.pt").is_file()
    assert "'config', 'data_config'" in proc.stdout and "'model'" in proc.stdout  # export
    assert "'tokenizer'" in proc.stdout
    # The resume block: the finished run resumes at its end; the second resumes at 75.
    assert "resumed from" in (tmp_path / "outputs" / "smoke" / "train.log").read_text()
    logs = [p.read_text() for p in (tmp_path / "outputs").glob("*/*/train.log")]
    assert any("step_00000075: step 75, epoch" in text for text in logs)
