"""The sweep summary and the objective handed to sweepers."""

import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dist_lstm.config import register_configs
from dist_lstm.config.compose import CONF_DIR, compose_config
from dist_lstm.errors import ConfigError
from dist_lstm.jobs.job import HydraJob, check_sweeper_direction, objective
from dist_lstm.jobs.sweep import shared_overrides, write_summary


def write_job(sweep_dir, name, **result):
    job_dir = sweep_dir / name
    (job_dir / ".hydra").mkdir(parents=True)
    if result:
        (job_dir / "result.json").write_text(json.dumps({"job": name, **result}))


def test_summary_lists_jobs_in_order_with_their_status(tmp_path):
    write_job(tmp_path, "10", status="completed", overrides=["optim.lr=3"], best_val_bleu=9.5)
    write_job(tmp_path, "2", status="failed", overrides=["optim.lr=-1"], error="lr is invalid")
    write_job(tmp_path, "3")  # started, no result yet
    rows = write_summary(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("2", "failed"),
        ("3", "unfinished"),
        ("10", "completed"),
    ]
    lines = (tmp_path / "sweep_summary.csv").read_text().splitlines()
    assert lines[0].startswith("job,status,overrides,best_val_bleu")
    assert lines[1] == "2,failed,optim.lr=-1,,,,,,lr is invalid"
    assert lines[3].startswith("10,completed,optim.lr=3,9.5,")


def test_table_shows_only_the_overrides_that_vary():
    rows = [{"overrides": ["experiment=smoke", f"optim.lr={lr}"]} for lr in (1, 2)]
    assert shared_overrides(rows) == ["experiment=smoke"]


def job(direction):
    return HydraJob(Path("multirun/0"), True, [], "", "sweep-x", direction)


def test_sweeper_direction_must_follow_the_monitored_metric():
    cfg = compose_config(["trainer.monitor=val_loss"])
    check_sweeper_direction(cfg, job("minimize"))
    with pytest.raises(ConfigError, match="set hydra.sweeper.direction=minimize"):
        check_sweeper_direction(cfg, job("maximize"))


def test_objective_is_the_best_monitored_value():
    cfg = compose_config(["trainer.monitor=val_chrf"])
    assert objective(cfg, {"best_val_chrf": 41.5, "best_val_bleu": 20.0}) == 41.5
    assert math.isnan(objective(cfg, {"best_val_chrf": None}))


def test_slurm_launcher_config_runs_one_task_per_gpu():
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (1, 4, 4)
