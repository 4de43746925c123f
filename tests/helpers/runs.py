"""Watching a training run from outside: its metrics, its logs, its final state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List

import torch

from dist_lstm.checkpoint import load_checkpoint


def wait_for_step(run_dir: Path, step: int, timeout: float = 180) -> None:
    """Until metrics.jsonl has logged `step` (so a fault meets training, not start-up)."""
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists():
            steps = [json.loads(x).get("step", 0) for x in metrics.read_text().splitlines()]
            if steps and max(steps) >= step:
                return
        time.sleep(0.5)
    raise AssertionError(f"{run_dir} did not reach step {step} in {timeout} s")


def logged(path: Path) -> str:
    """A log file with the console's line wrapping undone ('' if it does not exist)."""
    return " ".join(path.read_text().split()) if path.exists() else ""


def last_params(run_dir: Path) -> Dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last")["model"]


def train_losses(run_dir: Path) -> List[float]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def assert_same_training(run_dir: Path, reference: Path) -> None:
    """The same losses at every logged step and bitwise the same final weights."""
    assert train_losses(run_dir) == train_losses(reference)
    expected, actual = last_params(reference), last_params(run_dir)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
