"""Watching a training run from outside: its metrics, its logs, its final state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

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


def metric_records(run_dir: Path) -> List[Dict[str, Any]]:
    """Every record of a run's metrics.jsonl, in order."""
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_here(run_dir: Path, overrides: Sequence[str]) -> Tuple[Dict[str, Any], List[Dict]]:
    """Train in this process, with the config train.py composes from `overrides`: the
    run's result and its metrics records. Cheaper than a child process where the exit
    status or a signal is not what is tested."""
    from dist_lstm.config.compose import compose_config
    from dist_lstm.train.run import train

    result = train(compose_config(list(overrides)), run_dir=run_dir)
    return result, metric_records(run_dir)
