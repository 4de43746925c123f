"""One Hydra job: a single run, or one job of a multirun sweep (grid, Optuna, submitit).

`run_job` is what train.py hands to `@hydra.main`. It reads what only the Hydra process
knows (the job's directory, whether it is part of a sweep, the sweep's name, the job's
overrides), fills the W&B run name and group from it, trains in this process or in
`launcher.nproc_per_node` new ones, writes `result.json` in the job's directory and
returns the objective a sweeper optimises: the best value of `trainer.monitor`.

In a sweep, a failing job is recorded as failed (result.json, the sweep summary) and the
sweep goes on with the next one; `dist_lstm.jobs.sweep` reports the failures at the end.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, open_dict

from dist_lstm.atomic import atomic_write
from dist_lstm.config import validate_config
from dist_lstm.errors import ConfigError, UserError
from dist_lstm.evaluation import monitor_mode
from dist_lstm.exit_policy import user_errors
from dist_lstm.topology import launcher_rank, launcher_world_size
from dist_lstm.train.run import train

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class HydraJob:
    """What Hydra knows about the running job."""

    run_dir: Path
    multirun: bool
    overrides: List[str]  # the job's own command-line/sweep overrides
    override_dirname: str  # the overrides as one string: "model.hidden_size=256,optim.lr=0.001"
    sweep_name: Optional[str]  # e.g. "sweep-2026-11-24_10-00-00" (multirun only)
    sweeper_direction: Optional[str]  # minimize | maximize, when the sweeper optimises


def current_job() -> HydraJob:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    multirun = hydra.mode == RunMode.MULTIRUN
    sweep_name = None
    if multirun:
        sweep_dir = Path(hydra.sweep.dir)
        sweep_name = "sweep-" + "_".join(sweep_dir.parts[-2:])
    direction = getattr(hydra.sweeper, "direction", None)
    return HydraJob(
        run_dir=Path(hydra.runtime.output_dir),
        multirun=multirun,
        overrides=list(hydra.overrides.task),
        override_dirname=hydra.job.override_dirname,
        sweep_name=sweep_name,
        sweeper_direction=str(direction) if isinstance(direction, str) else None,
    )


def run_job(cfg: DictConfig) -> float:
    """Hydra's task function. Returns the objective (NaN for a failed sweep job)."""
    job = current_job()
    name_wandb_run(cfg, job)
    if not job.multirun:
        with user_errors():
            check_sweeper_direction(cfg, job)
            return objective(cfg, record_result(job, train_job(cfg, job.run_dir), cfg))
    try:
        check_sweeper_direction(cfg, job)
        result = train_job(cfg, job.run_dir)
    except Exception as exc:  # one job's failure must not end the sweep (UserError too)
        if isinstance(exc, UserError):
            log.error("job failed: %s", exc)
        else:
            log.exception("job failed")
        record_failure(job, exc)
        return math.nan
    return objective(cfg, record_result(job, result, cfg))


def name_wandb_run(cfg: DictConfig, job: HydraJob) -> None:
    """Unless set: a sweep's runs share one W&B group named after the sweep, and each run
    is named after its overrides (or its directory), so the W&B page reads like the sweep."""
    wandb = cfg.logger.wandb
    with open_dict(cfg):
        if wandb.group is None and job.sweep_name is not None:
            wandb.group = job.sweep_name
        if wandb.name is None:
            name = job.override_dirname or job.run_dir.name
            if job.multirun:
                name = f"{job.run_dir.name}:{name}"
            wandb.name = name


def check_sweeper_direction(cfg: DictConfig, job: HydraJob) -> None:
    """An optimising sweeper must push the monitored metric the right way."""
    if job.sweeper_direction is None:
        return
    wanted = "maximize" if monitor_mode(cfg.trainer.monitor) == "max" else "minimize"
    if job.sweeper_direction != wanted:
        raise ConfigError(
            f"hydra.sweeper.direction={job.sweeper_direction} but trainer.monitor="
            f"{cfg.trainer.monitor} is to {wanted[:-1]}e: set hydra.sweeper.direction={wanted}."
        )


def train_job(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    """In this process (plain run, or a rank that torchrun/srun started), or in
    `launcher.nproc_per_node` worker processes started here."""
    if cfg.launcher.nproc_per_node <= 1:
        return train(cfg, run_dir)
    validate_config(cfg)  # here, before N processes start only to report the same error
    if launcher_world_size() > 1:
        raise ConfigError(
            f"launcher.nproc_per_node={cfg.launcher.nproc_per_node} starts its own processes, "
            "but this process is already one of a launched job (torchrun, srun or deepspeed): "
            "leave launcher.nproc_per_node=1 there."
        )
    from dist_lstm.jobs.spawn import launch_local_workers

    return launch_local_workers(cfg, run_dir)


def objective(cfg: DictConfig, result: Dict[str, Any]) -> float:
    """The best validation value of `trainer.monitor` (what an Optuna sweep optimises)."""
    best = result.get("best_" + cfg.trainer.monitor)
    return math.nan if best is None else float(best)


def record_result(job: HydraJob, result: Dict[str, Any], cfg: DictConfig) -> Dict[str, Any]:
    """result.json: the job's overrides, status and final scores (read by the summary)."""
    _write_result(
        job,
        {
            "status": "completed",
            "objective": objective(cfg, result),
            "monitor": cfg.trainer.monitor,
            **result,
        },
    )
    return result


def record_failure(job: HydraJob, exc: BaseException) -> None:
    _write_result(job, {"status": "failed", "error": str(exc) or type(exc).__name__})


def _write_result(job: HydraJob, values: Dict[str, Any]) -> None:
    if launcher_rank() != 0:
        return
    record = {"job": job.run_dir.name, "overrides": job.overrides, **values}
    with atomic_write(job.run_dir / RESULT_FILE) as scratch:
        scratch.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    return float(value) if hasattr(value, "__float__") else str(value)


def read_result(job_dir: Path) -> Optional[Dict[str, Any]]:
    path = job_dir / RESULT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
