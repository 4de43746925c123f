"""The sweep summary: sweep_summary.csv and the table of what varies (jobs/sweep.py)."""

import json

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
