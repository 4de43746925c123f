"""metrics.jsonl (one JSON object per logged step or validation) and the loss plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from dist_lstm.atomic import atomic_write


class MetricsWriter:
    """Appends records to metrics.jsonl, flushing each so a crash loses nothing logged,
    and hands each record to `sink` (the W&B logger) when there is one."""

    def __init__(self, path: str | Path, sink: Optional[Any] = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sink = sink

    def write(self, record: Dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(clean) + "\n")
        if self.sink is not None:
            self.sink.log(clean)

    def log_samples(
        self,
        step: int,
        hypotheses: Dict[int, List[int]],
        decode: Callable[[List[List[int]]], List[str]],
        references: Sequence[str],
        count: int = 5,
    ) -> None:
        """A few validation translations beside their references, for the sink only (W&B
        shows them as a table); metrics.jsonl keeps numbers. decode: target ids -> text."""
        if self.sink is None:
            return
        first = sorted(hypotheses)[:count]
        texts = decode([hypotheses[i] for i in first])
        self.sink.log_samples(step, [[i, text, references[i]] for i, text in zip(first, texts)])

    def drop_after(self, step: int) -> None:
        """Forget records past `step` and the final test scores: a resumed run logs
        those steps again and tests its best model again at its end."""
        if not self.path.is_file():
            return
        kept = [
            r for r in read_metrics(self.path) if r.get("step", 0) <= step and "test_bleu" not in r
        ]
        with atomic_write(self.path) as scratch:
            scratch.write_text("".join(json.dumps(r) + "\n" for r in kept))


def peak_memory_mb(device: torch.device) -> float:
    """CUDA's peak allocated memory on GPUs, else this process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def read_metrics(path: str | Path) -> List[Dict[str, Any]]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plot_losses(metrics_path: str | Path, out_path: str | Path) -> Path:
    """Draw training and validation loss against steps into a PNG."""
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    valid = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    # Imported here: matplotlib costs every rank half a second at start-up and only rank
    # 0 draws. A Figure without pyplot needs no display and keeps no global state.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="train loss (label-smoothed)", color="tab:blue")
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per token")
    ax.set_title("Training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    return Path(out_path)
