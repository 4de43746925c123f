"""One sentence's attention as a heatmap image: source pieces across, target pieces down."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no display, no global figure state


def save_attention_heatmap(
    path: str | Path,
    attention: Sequence[Sequence[float]],
    src_pieces: Sequence[str],
    tgt_pieces: Sequence[str],
    title: str = "",
) -> Path:
    """attention (target pieces, source pieces) -> a PNG at `path`; the figure grows with
    the sentence so every piece keeps a readable label."""
    weights = np.asarray(attention, dtype=float).reshape(len(tgt_pieces), len(src_pieces))
    width = 1.5 + 0.42 * max(len(src_pieces), 4)
    height = 1.2 + 0.32 * max(len(tgt_pieces), 4)
    figure = Figure(figsize=(width, height), dpi=100)
    axes = figure.subplots()
    image = axes.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(src_pieces)), labels=list(src_pieces), rotation=60, ha="right")
    axes.set_yticks(range(len(tgt_pieces)), labels=list(tgt_pieces))
    axes.set_xlabel("source")
    axes.set_ylabel("translation")
    if title:
        axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
