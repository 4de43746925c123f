"""Where every benchmark writes its figures: benchmarks/results/<name>.json, with the
facts that make figures from different machines and days comparable."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, report: Dict[str, Any]) -> Path:
    """Add cores, torch version and date to `report`, write it as JSON and print it."""
    report = {
        **report,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return out
