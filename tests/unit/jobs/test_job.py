"""One Hydra job (jobs/job.py): the objective handed to sweepers, the sweeper's direction,
and the SLURM launcher config a job is started with."""

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dist_lstm.config import register_configs
from dist_lstm.config.compose import CONF_DIR, compose_config
from dist_lstm.errors import ConfigError
from dist_lstm.jobs.job import HydraJob, check_sweeper_direction, objective


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
