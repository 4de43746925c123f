"""The loss plot: drawn by rank 0 at the end, so no rank pays matplotlib's import to start."""

import json
import subprocess
import sys

from dist_lstm.logging.metrics import plot_losses
from tests.helpers.paths import ROOT


def test_training_starts_without_importing_matplotlib():
    probe = (
        "import sys, dist_lstm.train.run; "
        "print(sorted(m for m in sys.modules if 'matplotlib' in m))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_plot_draws_training_and_validation_loss_into_a_png(tmp_path):
    records = [{"step": s, "loss": 5.0 - s / 10} for s in range(1, 11)]
    records += [{"step": 5, "val_loss": 4.6}, {"step": 10, "val_loss": 4.2}]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = plot_losses(metrics, tmp_path / "loss.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
