"""Where every benchmark writes its figures: benchmarks/results/<name>.json, with the
facts that make figures from different machines and days comparable."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, report: Dict[str, Any], smoke: bool = False) -> Optional[Path]:
    """Add cores, torch version and date to `report`, print it as JSON and write it to
    results/<name>.json, except in a --smoke run, whose figures mean nothing."""
    report = {
        **report,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(report, indent=2))
    if smoke:
        return None
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out
