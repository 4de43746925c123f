"""`python train.py -m ...` as users run sweeps: a grid with a failing job, distributed jobs
inside a sweep, an Optuna search, a submitit job, and an unknown key caught before any job."""

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from dist_lstm.checkpoint import read_meta
from tests.helpers.configs import TINIER_MODEL, TINY_RUN
from tests.helpers.corpus import with_test_split
from tests.helpers.paths import ROOT
from tests.helpers.wandb_records import offline_runs

# Every job trains 6 steps on the shared corpus, with a test split for the test scores.
SWEEP_RUN = (
    *TINY_RUN,
    *TINIER_MODEL,
    "trainer.max_epochs=null",
    "trainer.max_steps=6",
    "trainer.val_every_steps=3",
)


def sweep(sweep_dir, *overrides, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "train.py", "-m", f"hydra.sweep.dir={sweep_dir}", *overrides],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary(sweep_dir):
    with (sweep_dir / "sweep_summary.csv").open() as rows:
        return list(csv.DictReader(rows))


def test_grid_sweep_runs_every_job_and_summarises_a_failed_one(corpus, tmp_path):
    """The failing job comes first: the jobs after it still run and complete."""
    sweep_dir = tmp_path / "grid"
    proc = sweep(
        sweep_dir,
        *with_test_split(corpus),
        *SWEEP_RUN,
        "optim.lr=-1,0.003,0.01",
        env={"WANDB_MODE": "offline"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output  # a job failed: the sweep says so in its status
    assert "1 of 3 jobs did not complete" in output
    rows = summary(sweep_dir)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("0", "failed"),
        ("1", "completed"),
        ("2", "completed"),
    ]
    assert "optim.lr=-1.0 is invalid" in rows[0]["error"]
    failed = json.loads((sweep_dir / "0" / "result.json").read_text())
    assert failed["status"] == "failed" and failed["error"] == rows[0]["error"]
    assert rows[0]["test_bleu"] == rows[0]["test_chrf"] == ""
    assert "optim.lr=0.003" in rows[1]["overrides"] and "optim.lr=0.01" in rows[2]["overrides"]
    for row in rows[1:]:
        job_dir = sweep_dir / row["job"]
        records = [json.loads(x) for x in (job_dir / "metrics.jsonl").read_text().splitlines()]
        best = max(r["val_bleu"] for r in records if "val_bleu" in r)
        (tested,) = [r for r in records if "test_bleu" in r]  # the best checkpoint, tested
        result = json.loads((job_dir / "result.json").read_text())
        assert (result["job"], result["status"], result["step"]) == (row["job"], "completed", 6)
        assert " ".join(result["overrides"]) == row["overrides"]
        assert result["monitor"] == "val_bleu"
        assert result["best_val_bleu"] == result["objective"] == pytest.approx(best)
        scores = (tested["test_bleu"], tested["test_chrf"])
        assert (result["test_bleu"], result["test_chrf"]) == pytest.approx(scores)
        assert tested["test_chrf"] > 0  # a score, not a placeholder
        assert float(row["best_val_bleu"]) == float(row["objective"]) == pytest.approx(best)
        assert (float(row["test_bleu"]), float(row["test_chrf"])) == pytest.approx(scores)
        assert (job_dir / "checkpoints" / "last" / "COMPLETE").is_file()
    # the printed table: one row per job, showing what varies between them
    assert "optim.lr=0.003" in proc.stdout and "failed" in proc.stdout
    # one W&B group named after the sweep, one run per job named after its overrides
    (first,), (second,) = offline_runs(sweep_dir / "1"), offline_runs(sweep_dir / "2")
    assert first["group"] == second["group"] == "sweep-" + "_".join(sweep_dir.parts[-2:])
    assert first["name"].startswith("1:") and "optim.lr=0.003" in first["name"]
    assert first["id"] != second["id"]


def test_unknown_override_key_fails_before_any_job_starts(corpus, tmp_path):
    sweep_dir = tmp_path / "typo"
    proc = sweep(sweep_dir, *with_test_split(corpus), *SWEEP_RUN, "optim.lrr=0.1,0.2")
    assert proc.returncode != 0
    assert "optim.lrr" in proc.stderr
    assert not any(p.is_dir() for p in sweep_dir.glob("*"))  # no job directory


def test_sweep_job_with_two_processes_trains(corpus, tmp_path):
    sweep_dir = tmp_path / "ddp"
    proc = sweep(
        sweep_dir, *with_test_split(corpus), *SWEEP_RUN, "launcher.nproc_per_node=2", "seed=1,2"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["status"] for r in summary(sweep_dir)] == ["completed", "completed"]
    for job in ("0", "1"):
        meta = read_meta((sweep_dir / job / "checkpoints" / "last").resolve())
        assert meta["world_size"] == 2 and meta["step"] == 6
        assert (sweep_dir / job / "train.rank1.log").is_file()
        assert "process group: gloo, rank 0 of 2" in (sweep_dir / job / "train.log").read_text()


def test_optuna_search_returns_the_better_trial(corpus, tmp_path):
    """Two trials that differ in learning rate; this short a run scores BLEU 0 either way,
    so the search minimises validation loss (the objective follows trainer.monitor)."""
    sweep_dir = tmp_path / "optuna"
    proc = sweep(
        sweep_dir,
        *with_test_split(corpus),
        *SWEEP_RUN,
        "hparams_search=optuna",
        "trainer.monitor=val_loss",
        "hydra.sweeper.direction=minimize",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.params={optim.lr: 'choice(0.0001, 0.01)'}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = summary(sweep_dir)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    lrs = {
        r["job"]: next(o for o in r["overrides"].split() if o.startswith("optim.lr=")) for r in rows
    }
    assert sorted(lrs.values()) == ["optim.lr=0.0001", "optim.lr=0.01"]
    objectives = {r["job"]: float(r["objective"]) for r in rows}
    for job, value in objectives.items():  # the objective is the job's best val_loss
        records = (sweep_dir / job / "metrics.jsonl").read_text().splitlines()
        losses = [json.loads(x)["val_loss"] for x in records if "val_loss" in x]
        assert value == pytest.approx(min(losses))
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best_job = min(objectives, key=objectives.get)
    assert results["best_value"] == pytest.approx(objectives[best_job])
    assert f"optim.lr={results['best_params']['optim.lr']}" == lrs[best_job]


def test_submitit_local_job_trains(corpus, tmp_path):
    sweep_dir = tmp_path / "submitit"
    proc = sweep(
        sweep_dir, *with_test_split(corpus), *SWEEP_RUN, "hydra/launcher=submitit_local", "seed=1"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = summary(sweep_dir)
    assert row["status"] == "completed" and row["step"] == "6"
    assert (sweep_dir / "0" / "checkpoints" / "last" / "COMPLETE").is_file()
    assert list((sweep_dir / ".submitit").glob("*/*_result.pkl"))  # ran as a submitit job
