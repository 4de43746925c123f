"""W&B logging: offline runs hold the config and the metrics at global steps, a resumed
run keeps its id, and the mode never waits for a login."""

import os
import subprocess
import sys

import pytest

from dist_lstm.checkpoint import read_meta
from dist_lstm.errors import ConfigError, UserError
from dist_lstm.logging.wandb import resolve_mode
from tests.helpers.configs import TINIER_MODEL, TINY_RUN
from tests.helpers.runs import train_here
from tests.helpers.wandb_records import offline_runs, wait_until_finished

WANDB_RUN = (*TINY_RUN, *TINIER_MODEL, "trainer.log_every_steps=1")


def run(run_dir, corpus, *overrides):
    train_here(run_dir, [*corpus, *WANDB_RUN, *overrides])


@pytest.fixture
def wandb_on(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc credentials
    # a W&B service of this test's own, not one an earlier test of this worker started
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


def test_offline_run_holds_config_and_metrics_and_resumes_with_its_id(
    corpus,
    tmp_path,
    wandb_on,
):
    logging = ["logger.wandb.mode=auto", "logger.wandb.tags=[smoke]", "trainer.val_every_steps=2"]
    run(tmp_path, corpus, "trainer.max_steps=4", *logging)
    wait_until_finished(tmp_path, runs=1)
    (first,) = offline_runs(tmp_path)
    meta = read_meta((tmp_path / "checkpoints" / "last").resolve())
    assert first["id"] == meta["wandb_run_id"]
    assert first["config"]["model"]["hidden_size"] == 16
    assert first["config"]["world_size"] == 1
    assert first["config"]["precision"] == "32"  # as the strategy applied it
    steps = [h["_step"] for h in first["history"] if "loss" in h]
    assert steps == [1, 2, 3, 4]  # the trainer's global steps
    assert [h["_step"] for h in first["history"] if "val_bleu" in h] == [2, 4]
    tables = [h for h in first["history"] if "table" in str(h.get("val_samples/_type"))]
    assert [h["_step"] for h in tables] == [2, 4]  # sample translations
    train = [h for h in first["history"] if "loss" in h]
    assert all(h["memory_mb"] > 0 and h["step_time_s"] > 0 and h["ppl"] > 1 for h in train)
    assert "best_val_bleu" in first["summary"]

    run(tmp_path, corpus, "trainer.max_steps=6", "resume=auto", *logging)
    wait_until_finished(tmp_path, runs=2)
    first_again, second = offline_runs(tmp_path)
    assert second["id"] == first["id"]  # the same W&B run continues
    assert [h["_step"] for h in second["history"] if "loss" in h] == [5, 6]


def test_mode_resolution_never_waits_for_a_login(wandb_on, monkeypatch):
    assert resolve_mode("auto") == "offline"
    with pytest.raises(UserError, match="wandb login"):
        resolve_mode("online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"  # the environment variable wins


def test_unknown_mode_is_refused(corpus, tmp_path):
    with pytest.raises(ConfigError, match="logger.wandb.mode"):
        run(tmp_path, corpus, "trainer.max_steps=1", "logger.wandb.mode=sometimes")


SERVICE_STOPPED_MID_RUN = """
import logging, signal, sys
from pathlib import Path
import psutil
from omegaconf import OmegaConf
from dist_lstm.config.schema import WandbConfig
from dist_lstm.logging.wandb import WandbLogger

logging.basicConfig(level=logging.WARNING)
cfg = OmegaConf.structured(WandbConfig(mode="offline"))
logger = WandbLogger(cfg, Path(sys.argv[1]), {"a": 1})
logger.log({"step": 1, "loss": 1.0})
service = psutil.Process().children(recursive=True)
assert service, "W&B started no service process"
for process in service:  # what SLURM's preemption does to every process of a job step
    process.send_signal(signal.SIGTERM)
psutil.wait_procs(service, timeout=30)
logger.log({"step": 2, "loss": 0.5})
logger.summarize({"best": 1.0})
logger.finish(exit_code=143)
print("the run went on")
sys.exit(143)
"""


def test_a_stopped_wandb_service_costs_neither_the_exit_status_nor_a_traceback(tmp_path, wandb_on):
    # its own W&B service, not one an earlier test of this worker left in WANDB_SERVICE
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    proc = subprocess.run(
        [sys.executable, "-c", SERVICE_STOPPED_MID_RUN, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "the run went on" in proc.stdout
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.count("W&B: could not log") == 1  # warned once, then W&B is off
