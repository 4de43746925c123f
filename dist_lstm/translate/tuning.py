"""Choosing the search options (beam size, length penalty) on held-out data, not by hand.

Every (beam, alpha) of a grid translates the same sentences and is scored with sacreBLEU;
the best BLEU wins, ties going to the cheaper search (smaller beam, then smaller alpha).
Greedy search ignores the length penalty, so beam 1 is tried once, with alpha 0.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Sequence

from dist_lstm.evaluation import sacrebleu_scores
from dist_lstm.translate.inference import LoadedModel, SearchOptions, Translator

log = logging.getLogger(__name__)


@dataclass
class GridPoint:
    beam: int
    alpha: float
    bleu: float
    chrf: float
    seconds: float  # translating the sentences with these options


def grid_options(beams: Sequence[int], alphas: Sequence[float]) -> List[tuple[int, float]]:
    """The (beam, alpha) pairs worth decoding: each once, beam 1 only with alpha 0."""
    pairs = []
    for beam in sorted(set(beams)):
        for alpha in sorted(set(alphas)) if beam > 1 else [0.0]:
            pairs.append((beam, alpha))
    return pairs


@dataclass
class GridResult:
    points: List[GridPoint]
    bleu_signature: str

    @property
    def best(self) -> GridPoint:
        """The highest BLEU; among equals (to 0.01), the smaller beam, then alpha."""
        return max(self.points, key=lambda p: (round(p.bleu, 2), -p.beam, -p.alpha))

    def report(self) -> Dict[str, Any]:
        best = self.best
        return {
            "best": {"beam": best.beam, "alpha": best.alpha, "bleu": best.bleu, "chrf": best.chrf},
            "grid": [asdict(point) for point in self.points],
            "bleu_signature": self.bleu_signature,
        }

    def table(self) -> str:
        """BLEU per beam (rows) and alpha (columns); greedy's row has alpha 0 only."""
        alphas = sorted({p.alpha for p in self.points})
        bleu = {(p.beam, p.alpha): p.bleu for p in self.points}
        lines = ["beam \\ alpha" + "".join(f"{alpha:>8.2f}" for alpha in alphas)]
        for beam in sorted({p.beam for p in self.points}):
            cells = (bleu.get((beam, alpha)) for alpha in alphas)
            lines.append(
                f"{beam:>12}" + "".join(" " * 8 if c is None else f"{c:>8.2f}" for c in cells)
            )
        return "\n".join(lines)


def search_grid(
    loaded: LoadedModel,
    base: SearchOptions,
    sources: Sequence[str],
    references: Sequence[str],
    beams: Sequence[int],
    alphas: Sequence[float],
) -> GridResult:
    """Translate `sources` with every (beam, alpha) of the grid and score each."""
    grid = grid_options(beams, alphas)
    for beam, alpha in grid:  # a bad beam is refused before the first decode, not after
        replace(base, beam=beam, alpha=alpha).validate()
    points, signature = [], ""
    for beam, alpha in grid:
        options = replace(base, beam=beam, alpha=alpha)
        started = time.monotonic()
        hypotheses = Translator(loaded, options).translate(sources)
        scores = sacrebleu_scores(hypotheses, references)
        signature = scores["bleu_signature"]
        point = GridPoint(beam, alpha, scores["bleu"], scores["chrf"], time.monotonic() - started)
        log.info(
            "beam %d alpha %.2f: BLEU %.2f chrF %.2f (%.1f s)",
            beam,
            alpha,
            point.bleu,
            point.chrf,
            point.seconds,
        )
        points.append(point)
    return GridResult(points, signature)
