"""benchmarks/gpu_check.sh on this CPU machine: it must never pass where a GPU shows.

A fake `nvidia-smi` on PATH makes this machine look like one with a GPU; torch here has
no CUDA, so the check must fail with a report naming torch's CUDA version, the driver
and the error. The budget and the judging of checks run in-process on commands that
need no GPU (gpu_check.py is standard library only)."""

import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers.paths import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

FAKE_NVIDIA_SMI = """#!/bin/sh
case "$1" in
  -L) echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-fake)";;
  *) echo "NVIDIA H100 80GB HBM3, 580.159.04";;
esac
"""


def fake_gpu_path(tmp_path: Path) -> str:
    """PATH with an nvidia-smi that lists one H100 with driver 580.159.04."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def run_gpu_check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--out", str(tmp_path / "report.json"), *args],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path), **env},  # the call's folder goes there
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_gpu_shown_with_torch_without_cuda_fails_naming_cuda_driver_and_error(tmp_path):
    proc = run_gpu_check(
        tmp_path, "--wheels", str(tmp_path / "no_wheels"), PATH=fake_gpu_path(tmp_path)
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["all_ok"] is False and report["checks"] == []
    assert report["gpu_signs"] == ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-fake)"]
    assert (report["gpu"], report["driver"]) == ("NVIDIA H100 80GB HBM3", "580.159.04")
    import torch

    assert report["torch"] == torch.__version__ and report["torch_cuda"] is None
    assert "without CUDA" in report["error"] and "580.159.04" in report["error"]
    assert report["not_run"] == [c.name for c in gpu_check.plan(tmp_path)]  # nothing ran
    assert "FAILED before any check" in proc.stdout


def test_torch_that_does_not_import_is_a_failing_report(tmp_path):
    broken = tmp_path / "broken" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('libcudart.so.13: cannot open')\n")
    proc = run_gpu_check(
        tmp_path,
        "--wheels",
        str(tmp_path / "no_wheels"),
        PATH=fake_gpu_path(tmp_path),
        PYTHONPATH=str(broken.parent),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["error"] == "import torch failed: ImportError: libcudart.so.13: cannot open"
    assert report["driver"] == "580.159.04" and not report["all_ok"]


def test_dry_run_prints_the_plan_and_its_budget_and_runs_nothing(tmp_path):
    proc = run_gpu_check(tmp_path, "--dry-run", "--budget", "300")
    assert proc.returncode == 0, proc.stderr
    assert f"{len(gpu_check.plan(tmp_path))} checks, overall budget 300 s" in proc.stdout
    for check in gpu_check.plan(tmp_path):
        assert check.name in proc.stdout
    assert "resume_identity.py --experiment=bench_lstm512" in proc.stdout
    assert not (tmp_path / "report.json").exists()


def test_an_unknown_check_name_is_refused_with_status_2(tmp_path):
    proc = run_gpu_check(tmp_path, "--dry-run", "--only", "train_32,nonesuch")
    assert proc.returncode == 2
    assert "unknown check ['nonesuch']" in proc.stderr and "Traceback" not in proc.stderr


def ended(pid: int, within_s: float = 10.0) -> bool:
    """Whether the process ends within `within_s` (a killed one at once): its pidfd
    becomes readable when it terminates, reaped or not."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], within_s)
    finally:
        os.close(pidfd)
    return bool(readable)


def always_fine(outcome):
    return None, {"said": outcome.output.strip()}


def test_the_budget_stops_a_check_kills_its_process_group_and_fails_the_rest(tmp_path):
    """A check cut by the overall budget fails, the ones after it are listed as not run,
    and the cut command's children die with it (torchrun's workers would otherwise hold
    the GPU)."""
    pid_file = tmp_path / "child.pid"
    checks = [
        gpu_check.Check("quick", "", ["echo", "hello"], 60, always_fine),
        gpu_check.Check(
            "endless",  # a child that would run for 10 minutes, and its parent waiting
            "",
            ["bash", "-c", f"sleep 600 & echo $! > {pid_file}; wait"],
            60,
            always_fine,
        ),
        gpu_check.Check("never", "", ["echo", "late"], 60, always_fine),
    ]
    results, not_run = gpu_check.run_plan(checks, dict(os.environ), 3.0, tmp_path)
    assert [r["check"] for r in results] == ["quick", "endless"] and not_run == ["never"]
    quick, endless = results
    assert quick["ok"] and quick["figures"] == {"said": "hello"}
    assert not endless["ok"] and endless["stopped_by"] == "overall budget"
    assert endless["problem"].startswith("stopped by the overall budget")
    assert ended(int(pid_file.read_text()))
    report = gpu_check.report_of({}, results, not_run, None)
    assert report["all_ok"] is False and report["checks_planned"] == 3


def test_a_check_over_its_own_limit_fails_as_cut_by_that_limit(tmp_path):
    check = gpu_check.Check("slow", "", ["sleep", "600"], 1, always_fine)
    (result,), not_run = gpu_check.run_plan([check], dict(os.environ), 300.0, tmp_path)
    assert result["stopped_by"] == "check limit" and not result["ok"] and not not_run


def test_a_check_passes_only_with_status_0_and_nothing_wrong_in_its_output(tmp_path):
    def judge(outcome):
        return gpu_check.judge_pytest(outcome)

    checks = [
        gpu_check.Check("all_ran", "", ["echo", "4 passed in 3.1s"], 60, judge),
        gpu_check.Check("a_skip", "", ["echo", "3 passed, 1 skipped in 2.0s"], 60, judge),
        gpu_check.Check("exit_1", "", ["bash", "-c", "echo '4 passed in 1s'; exit 1"], 60, judge),
    ]
    warning = f"echo 'UserWarning: RNN module weights are {gpu_check.CONTIGUOUS_CHUNK_WARNING}'"
    checks.append(gpu_check.Check("warns", "", ["bash", "-c", f"{warning}; {warning}"], 60, judge))
    results, _ = gpu_check.run_plan(checks, dict(os.environ), 60.0, tmp_path)
    by_name = {r["check"]: r for r in results}
    assert by_name["warns"]["contiguous_chunk_warnings"] == 2  # counted in every check
    assert by_name["all_ran"]["contiguous_chunk_warnings"] == 0
    results = results[:3]
    assert by_name["all_ran"]["ok"] and by_name["all_ran"]["figures"]["passed"] == 4
    assert by_name["a_skip"]["problem"] == "1 skipped: every CUDA test must run on a GPU"
    assert by_name["exit_1"]["problem"] == "exit status 1" and by_name["exit_1"]["status"] == 1
    assert gpu_check.report_of({}, results, [], None)["all_ok"] is False
    assert gpu_check.report_of({}, results[:1], [], None)["all_ok"] is True
    assert gpu_check.report_of({}, results[:1], [], "driver too old")["all_ok"] is False


def test_a_benchmarks_figures_are_kept_whole_however_long_its_output():
    """train_speed's tokens/s and MFU come early in a long report: the judge parses the
    whole JSON, not the output's tail."""
    report = {"tokens_per_sec": 51234.5, "mfu": {"vs_measured_gemm": {"mfu": 0.21}}}
    report["per_window"] = list(range(2000))  # pushes the figures far from the end
    output = "loading...\n" + json.dumps(report, indent=2) + "\nwrote results\n"
    judge = gpu_check.judge_benchmark(
        gpu_check.positive("tokens_per_sec", "mfu.vs_measured_gemm.mfu")
    )
    problem, figures = judge(gpu_check.Outcome(0, output, Path(".")))
    assert problem is None and figures == report
    report["tokens_per_sec"] = 0
    problem, _ = judge(gpu_check.Outcome(0, json.dumps(report, indent=2), Path(".")))
    assert problem == "tokens_per_sec is 0, not a positive figure"


def test_a_training_check_reads_its_runs_metrics(tmp_path):
    records = [
        {"step": 1, "loss": 7.0, "tokens_per_sec": 900.0, "memory_mb": 210.0},
        {"step": 10, "loss": 5.0, "tokens_per_sec": 1100.0, "memory_mb": 230.0},
        {"step": 10, "val_loss": 4.9, "val_bleu": 1.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    outcome = gpu_check.Outcome(0, "", tmp_path)
    problem, figures = gpu_check.judge_training(tmp_path, 10)(outcome)
    assert problem is None
    assert figures == {
        "final_step": 10,
        "first_loss": 7.0,
        "final_loss": 5.0,
        "tokens_per_sec_median": 1000.0,
        "peak_memory_mb": 230.0,
        "val_bleu": 1.5,
    }
    problem, _ = gpu_check.judge_training(tmp_path, 40)(outcome)
    assert problem == "stopped at step 10, not 40"


def test_resume_identity_judge_fails_beyond_the_tolerance():
    whole = {
        "sigterm_at_step": 30,
        "stopped_at_step": 30,
        "resumed_from_step": 30,
        "weights_within_atol": True,
        "logged_losses_within_atol": True,
    }
    assert gpu_check.resume_problem(whole) is None
    moved = {**whole, "weights_within_atol": False, "max_abs_weight_difference": 2e-3}
    moved.update(atol=1e-4, tensors_differing=["encoder.lstm.weight_ih_l1"])
    assert gpu_check.resume_problem(moved) == (
        "weights differ by up to 0.002 (tolerance 0.0001) in 1 tensors"
    )
    assert gpu_check.resume_problem({**whole, "resumed_from_step": 20}) == "resumed from 20"


def fake_h100_machine(monkeypatch, checks, tmp_path):
    """gpu_check.main on a machine that shows an H100 whose torch sees it, running
    `checks` (commands that need no GPU) as its plan; its folder under `tmp_path`."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(gpu_check, "gpu_signs", lambda: ["GPU 0: NVIDIA H100 80GB HBM3"])
    monkeypatch.setattr(
        gpu_check, "driver_facts", lambda: {"gpu": "NVIDIA H100 80GB HBM3", "driver": "580.1"}
    )
    facts = {"torch": "2.11.0+cu130", "torch_cuda": "13.0", "cuda_available": True}
    monkeypatch.setattr(gpu_check, "preflight", lambda python, env: {**facts, "missing": {}})
    monkeypatch.setattr(gpu_check, "plan", lambda work, python=sys.executable: checks)


def said(outcome):
    return None, {"said": outcome.output.strip()}


def test_every_check_passing_on_a_gpu_machine_exits_0_with_each_checks_figures(
    tmp_path, monkeypatch
):
    """The checks see the working tree first on PYTHONPATH (its dist_lstm, not an
    installed copy) and W&B off."""
    command = (
        "import os; print(os.environ['PYTHONPATH'].split(os.pathsep)[0], os.environ['WANDB_MODE'])"
    )
    fake_h100_machine(
        monkeypatch,
        [gpu_check.Check("env", "", [sys.executable, "-c", command], 60, said)],
        tmp_path,
    )
    out = tmp_path / "report.json"
    assert gpu_check.main(["--out", str(out), "--wheels", str(tmp_path / "none")]) == 0
    report = json.loads(out.read_text())
    assert report["all_ok"] and report["error"] is None and report["not_run"] == []
    assert (report["torch_cuda"], report["driver"]) == ("13.0", "580.1")
    assert report["checks"][0]["figures"] == {"said": f"{ROOT} disabled"}


def test_one_failing_check_on_a_gpu_machine_exits_1(tmp_path, monkeypatch):
    checks = [
        gpu_check.Check("fine", "", ["true"], 60, said),
        gpu_check.Check("broken", "", ["false"], 60, said),
    ]
    fake_h100_machine(monkeypatch, checks, tmp_path)
    out = tmp_path / "report.json"
    assert gpu_check.main(["--out", str(out), "--wheels", str(tmp_path / "none")]) == 1
    report = json.loads(out.read_text())
    assert [c["ok"] for c in report["checks"]] == [True, False] and not report["all_ok"]
    assert report["checks"][1]["problem"] == "exit status 1"


def test_the_translate_check_wants_one_translation_in_its_output_file(tmp_path):
    output = tmp_path / "translate_output.en"
    judge = gpu_check.judge_translate(output)
    outcome = gpu_check.Outcome(0, "INFO loading\n", tmp_path)
    assert judge(outcome)[0].startswith("expected one translation")  # nothing written
    output.write_text("A dog runs through the snow.\n")
    assert judge(outcome) == (None, {"translation": "A dog runs through the snow."})
