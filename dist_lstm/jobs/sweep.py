"""The summary of a Hydra multirun sweep: `sweep_summary.csv` and a table at the end.

A Hydra callback (registered in conf/config.yaml) collects every job's `result.json`
(written by `dist_lstm.jobs.job`) from the sweep directory. The CSV is rewritten after each job,
by whichever process ran it (a submitit job on a cluster node too: one atomic rename, so
a reader never sees half a file), and once more at the end by the process that ran the
sweep, which also prints the table. When a job failed, the sweep exits with status 1 after
the summary, so scripts notice while every other job's results are kept.
"""

from __future__ import annotations

import csv
import logging
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dist_lstm.atomic import atomic_write
from dist_lstm.jobs.job import read_result
from dist_lstm.topology import launcher_rank

log = logging.getLogger(__name__)

SUMMARY_FILE = "sweep_summary.csv"
COLUMNS = (
    "job",
    "status",
    "overrides",
    "best_val_bleu",
    "objective",
    "test_bleu",
    "test_chrf",
    "step",
    "error",
)


def collect_results(sweep_dir: Path) -> List[Dict[str, Any]]:
    """Each job directory's result, in job order; a job without one is still running
    (or was killed before it could write it)."""
    rows = []
    job_dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    for job_dir in sorted(job_dirs, key=_job_order):
        if (job_dir / ".hydra").is_dir() or (job_dir / "result.json").is_file():
            rows.append(read_result(job_dir) or {"job": job_dir.name, "status": "unfinished"})
    return rows


def _job_order(path: Path) -> Any:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def write_summary(sweep_dir: Path) -> List[Dict[str, Any]]:
    rows = collect_results(sweep_dir)
    with atomic_write(sweep_dir / SUMMARY_FILE) as scratch, scratch.open("w", newline="") as out:
        writer = csv.DictWriter(out, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "overrides": " ".join(row.get("overrides", []))})
    return rows


def print_summary(rows: List[Dict[str, Any]], sweep_dir: Path) -> None:
    from rich import get_console
    from rich.table import Table

    shared = shared_overrides(rows)
    title = f"sweep {sweep_dir}" + (f"\nevery job: {' '.join(shared)}" if shared else "")
    table = Table(title=title)
    for column in ("job", "status", "overrides", "best val BLEU", "test BLEU", "steps"):
        table.add_column(column, justify="right" if column != "overrides" else "left")
    for row in rows:
        table.add_row(
            str(row.get("job", "")),
            row.get("status", ""),
            " ".join(o for o in row.get("overrides", []) if o not in shared),
            _score(row.get("best_val_bleu")),
            _score(row.get("test_bleu")),
            str(row.get("step", "")),
        )
    get_console().print(table)
    log.info("sweep summary: %s", sweep_dir / SUMMARY_FILE)


def shared_overrides(rows: List[Dict[str, Any]]) -> List[str]:
    """Overrides every job has: printed once above the table, so rows show what varies."""
    lists = [row.get("overrides", []) for row in rows if "overrides" in row]
    if len(lists) < 2:
        return []
    return [o for o in lists[0] if all(o in other for other in lists[1:])]


def _score(value: Optional[float]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}"


class SweepSummary(Callback):
    """Hydra callback; does nothing outside multirun."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN and launcher_rank() == 0:
            write_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():  # nothing ran (e.g. a sweep of zero jobs)
            return
        rows = write_summary(sweep_dir)
        print_summary(rows, sweep_dir)
        failed = [row["job"] for row in rows if row.get("status") != "completed"]
        if failed:
            log.error(
                "%d of %d jobs did not complete (%s); their errors are in %s and in each "
                "job's train.log.",
                len(failed),
                len(rows),
                ", ".join(map(str, failed)),
                sweep_dir / SUMMARY_FILE,
            )
            sys.exit(1)
