"""Watching a training run from outside: its metrics and its logs."""

from __future__ import annotations

import json
import time
from pathlib import Path


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
