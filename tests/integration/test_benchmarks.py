"""Each benchmark script's --smoke mode runs end to end, so the scripts cannot rot.
The figures themselves are measured by running the scripts; what is asserted here are the
relations between them that hold on any machine (a rate is its count over its time, MFU is
achieved over peak, a size follows from the parameters), so a mistake in how a figure is
derived fails even though its value is unknown."""

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from typing import Set

import pytest

from tests.conftest import ROOT


def run_benchmark(script, *args):
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = re.findall(r"^\{$.*?^\}$", proc.stdout, re.MULTILINE | re.DOTALL)[-1]
    return json.loads(report)  # the last top-level JSON object printed


def test_train_speed_smoke_reports_throughput_mfu_and_breakdown():
    report = run_benchmark("train_speed.py", "--smoke")
    assert report["tokens_per_sec"] > 0 and report["peak_rss_mb"] > 0
    assert report["peak_tree_rss_mb"] > 0
    assert 0 < report["mfu_vs_2048_gemm"] and report["model_gflop_per_target_token"] > 0
    phases = report["breakdown_per_step"]
    assert phases["forward_s"] > 0 and phases["backward_s"] > 0 and phases["optimizer_s"] > 0


def test_quality_then_translate_speed_smoke(tmp_path):
    report = run_benchmark("quality.py", "--smoke", "--run-dir", str(tmp_path))
    assert {"bleu", "chrf"} <= set(report["test_greedy"]) and report["steps"] == 20
    reached = report["time_to_bleu"]  # target 0 in smoke mode: the first checkpoint
    assert reached["reached"] and reached["step"] == 10 and reached["train_seconds"] > 0
    speed = run_benchmark("translate_speed.py", "--checkpoint", str(tmp_path), "--smoke")
    assert speed["sentences"] == 64 and speed["gemm_gflops_2048"] > 0
    for search in ("greedy", "beam5"):
        assert speed["results"][search]["sentences_per_sec"] > 0


def test_checkpoint_io_smoke():
    report = run_benchmark("checkpoint_io.py", "--smoke")
    assert report["checkpoint_mb"] > 0 and report["sync_save_s"] > 0 and report["load_s"] > 0


def test_scaling_smoke_runs_every_setting():
    report = run_benchmark("scaling.py", "--smoke")
    assert set(report["settings"]) == {"single_1x2threads", "ddp_2x1thread"}
    assert all(s["tokens_per_sec"] > 0 for s in report["settings"].values())
    assert report["gradient_allreduce_ms_per_step"] > 0


def test_data_scale_smoke_prepares_and_measures_every_run():
    report = run_benchmark("data_scale.py", "--smoke")
    assert report["prepare_large"]["pairs_kept"] == 3000
    assert report["prepare_large"]["disk_bytes_per_token"] > 0
    assert set(report["runs"]) == {"baseline_2rank", "large_2rank"}
    assert len(report["runs"]["large_2rank"]["peak_rss_mb_per_rank"]) == 2
    assert len(report["data_memory_mb_per_rank_2rank"]) == 2
    assert report["runs"]["large_2rank"]["seconds_to_first_step"] > 0
    assert report["loader_batches_per_sec"] > 0 and "projection_40M" in report


def test_serve_load_smoke_measures_both_phases(smoke_run):
    report = run_benchmark("serve_load.py", "--checkpoint", str(smoke_run), "--smoke")
    for phase in ("plain", "alignments"):
        figures = report["phases"][phase]
        assert figures["requests"] == 16 and figures["not_200"] == 0
        assert (
            figures["requests_per_sec"] > 0
            and figures["latency_p99_ms"] >= figures["latency_p50_ms"]
        )
        assert figures["server_peak_rss_mb"] > 0


def test_gpu_check_without_a_gpu_says_so_and_runs_nothing(tmp_path):
    result_file = ROOT / "benchmarks" / "results" / "gpu_check.json"
    before = result_file.stat().st_mtime if result_file.exists() else None
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"],
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU on this machine" in proc.stdout and "nothing to check" in proc.stdout
    assert proc.stdout.count("\n") == 1  # no check ran
    assert (result_file.stat().st_mtime if result_file.exists() else None) == before


def test_decode_choices_smoke_scores_tuning_averaging_and_an_ensemble(smoke_run):
    report = run_benchmark("decode_choices.py", "--run-dir", str(smoke_run), "--smoke")
    assert len(report["tune_search_valid"]["grid"]) == 3  # greedy once, beam 2 twice
    assert report["test_with_tuned_search"]["beam"] == report["tune_search_valid"]["best"]["beam"]
    assert len(report["averaged"]["last_2"]["averaged"]) == 2
    assert report["averaged"]["to_best_2"]["averaged"][-1] == report["best_checkpoint"]
    assert len(report["ensemble"]["checkpoints"]) == 2


def test_ablations_smoke_trains_each_variant_and_skips_finished_ones(tmp_path):
    args = ("ablations.py", "--smoke", "--run-root", str(tmp_path), "--parallel", "2")
    report = run_benchmark(*args)
    assert set(report["variants"]) == {"baseline", "word_dropout_0.1"}
    assert "model.word_dropout=0.1" in report["commands"]["word_dropout_0.1"]
    for variant in report["variants"].values():
        assert variant["steps"] == 6 and {"bleu", "chrf"} <= set(variant["test_beam2"])
    scores = tmp_path / "baseline" / "ablation_scores.json"
    written = scores.stat().st_mtime_ns
    assert run_benchmark(*args)["variants"] == report["variants"]  # nothing trained again
    assert scores.stat().st_mtime_ns == written


def test_resume_identity_smoke_compares_an_interrupted_run_with_a_whole_one():
    """The stop is asked for at step 25 of 60; the run must say it stopped there and the
    resumed run that it continued from there (no window of steps: no timing decides)."""
    report = run_benchmark("resume_identity.py", "--smoke")
    assert report["sigterm_exit_status"] == 143 and report["sigterm_at_step"] == 25
    assert report["stopped_at_step"] == report["resumed_from_step"] == 25
    assert report["final_step"] == [60, 60]
    assert report["weights_identical"] and report["logged_losses_identical"]
    assert report["logged_losses_compared"] == report["logged_losses_uninterrupted"] >= 6


def test_translate_speed_checkouts_smoke_runs_a_commit_from_its_own_worktree(smoke_run):
    report = run_benchmark(
        "translate_speed_checkouts.py",
        "--checkpoint",
        str(smoke_run),
        "--commits",
        "HEAD",
        "--smoke",
    )
    assert list(report["rounds"][0]) == ["HEAD"] and report["commits"]["HEAD"]
    assert report["rounds"][0]["HEAD"]["greedy"]["sentences_per_sec"] > 0
    assert report["median_sentences_per_sec"]["HEAD"]["greedy"] > 0
    assert report["same_translations"] == {"greedy": True}  # one commit agrees with itself
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True
    )
    assert "speed-checkouts-" not in worktrees.stdout  # removed afterwards


def imported_top_level_modules(path) -> Set[str]:
    """Every absolute import in a script, module level or inside functions, by top name."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def base_install_distributions() -> Set[str]:
    """The distributions `pip install -e .` brings (the README's base install): pyproject's
    dependencies and theirs, recursively, without any extra."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pending = [Requirement(text) for text in project["dependencies"]]
    found: Set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        found.add(name)
        pending += [Requirement(t) for t in importlib.metadata.requires(requirement.name) or []]
    return found


def test_every_benchmark_imports_only_what_the_base_install_brings():
    """The README lists `python benchmarks/<script>.py` after `pip install -e .` with no
    extra: a module only an extra brings (psutil came with deepspeed) fails at import."""
    from packaging.utils import canonicalize_name

    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    own = {path.stem for path in scripts} | {"dist_lstm", "__future__"}
    providers = importlib.metadata.packages_distributions()
    base = base_install_distributions()
    missing = {
        f"{path.name}: {module}"
        for path in scripts
        for module in imported_top_level_modules(path) - own - set(sys.stdlib_module_names)
        if not {canonicalize_name(d) for d in providers.get(module, [])} & base
    }
    assert not missing, f"imported by benchmarks but not in the base install: {sorted(missing)}"
