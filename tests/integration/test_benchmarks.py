"""Each benchmark script's --smoke mode runs end to end, so the scripts cannot rot.
The figures themselves are measured by running the scripts; what is asserted here are the
relations between them that hold on any machine (a rate is its count over its time, MFU is
achieved over peak, a size follows from the parameters), so a mistake in how a figure is
derived fails even though its value is unknown."""

import importlib.metadata
import json
import math
import os
import re
import statistics
import subprocess
import sys
from typing import Set

import pytest

from dist_lstm.config.compose import compose_config
from dist_lstm.model import build_model
from tests.helpers.imports import imported_top_level_modules
from tests.helpers.paths import ROOT


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


def assert_rate(rate, count, seconds, rate_decimals, seconds_decimals):
    """`rate` is `count / seconds`, given the report rounds the rate and the seconds to
    these decimals: it must lie between the rates at the ends of the seconds' rounding
    interval, widened by the rate's own rounding."""
    half, rate_half = 0.5 * 10**-seconds_decimals, 0.5 * 10**-rate_decimals
    low = count / (seconds + half) - rate_half
    high = count / (seconds - half) + rate_half if seconds > half else math.inf
    assert low <= rate <= high, (rate, count, seconds)


def physical_memory_mb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


# A process that has imported torch and trained a model holds more than this (about
# 500 MB here); a figure below it is in the wrong unit.
TRAINING_PROCESS_MIN_MB = 100


def smoke_model(src_vocab, tgt_vocab):
    return build_model(compose_config(["experiment=smoke"]).model, src_vocab, tgt_vocab)


def flops_per_target_token_from_weights(breakdown) -> float:
    """Training FLOPs per target token counted from the smoke model's own weight matrices
    (2 per weight per token forward, x3 with backward), not from the config's formula:
    the encoder and attention keys once per source token, the decoder's LSTM, combine and
    output layers once per target token, attention scores and context over the source.
    Embeddings and the once-per-sentence bridge are left out, as the benchmark says."""
    model = smoke_model(8, breakdown["tgt_vocab"])  # the source embedding is not counted
    matrices = {
        name: p.numel()
        for name, p in model.named_parameters()
        if p.dim() == 2 and "embedding" not in name and "bridge" not in name
    }
    per_source = sum(
        n for name, n in matrices.items() if name.startswith("encoder.") or "key_proj" in name
    )
    per_target = sum(matrices.values()) - per_source
    src_per_tgt = breakdown["mean_src_tokens"] / breakdown["mean_tgt_tokens"]
    attention = 2 * 2 * breakdown["mean_src_len"] * model.decoder.combine.out_features
    return 3 * (2 * per_source * src_per_tgt + 2 * per_target + attention)


def test_train_speed_smoke_reports_throughput_mfu_and_breakdown():
    report = run_benchmark("train_speed.py", "--smoke")
    # --smoke: 12 steps, the first 4 left out, a logging window every 2 steps
    assert (report["steps"], report["warmup_steps"], report["windows"]) == (12, 4, 4)
    assert report["tokens_per_sec"] > 0
    achieved = report["achieved_gflops"]
    assert achieved == pytest.approx(
        report["tokens_per_sec"] * report["model_gflop_per_target_token"]
    )
    assert report["model_gflop_per_target_token"] == pytest.approx(
        flops_per_target_token_from_weights(report["breakdown_per_step"]) / 1e9
    )
    gemm = report["gemm_gflops"]
    assert report["mfu_vs_2048_gemm"] == pytest.approx(achieved / gemm["2048^3"])
    model_shapes = [rate for name, rate in gemm.items() if name != "2048^3"]
    assert len(model_shapes) == 4
    assert report["mfu_vs_model_shape_gemm"] == pytest.approx(
        achieved / statistics.mean(model_shapes)
    )
    if report["onednn_gemm_gflops"] is not None:
        onednn = report["onednn_gemm_gflops"]["2048^3"]
        assert report["mfu_vs_2048_onednn"] == pytest.approx(achieved / onednn)
    # the named MFU: on a CPU the products are fp32 and there is no rated GPU peak
    mfu = report["mfu"]
    assert mfu["products"] == report["products"] == report["gemm_products"] == "fp32"
    assert mfu["achieved_tflops"] == pytest.approx(achieved / 1e3)
    assert mfu["vs_measured_gemm"]["mfu"] == pytest.approx(achieved / gemm["2048^3"])
    assert mfu["vs_measured_gemm"]["tflops"] == pytest.approx(gemm["2048^3"] / 1e3)
    assert mfu["vs_rated_peak"] is None and report["gpu"] is None
    for peak in ("peak_rss_mb", "peak_tree_rss_mb"):
        assert TRAINING_PROCESS_MIN_MB < report[peak] < physical_memory_mb(), peak
    phases = report["breakdown_per_step"]
    parts = [phases[f"{name}_s"] for name in ("data", "forward", "backward", "optimizer")]
    assert all(part > 0 for part in parts) and phases["communication_s"] == 0.0
    assert phases["total_s"] == pytest.approx(sum(parts))


def test_train_speed_throughput_only_runs_train_py_alone():
    """gpu_check's extra precisions: tokens/s and memory, no breakdown, GEMM or MFU."""
    report = run_benchmark("train_speed.py", "--smoke", "--throughput-only", "--tf32", "off")
    assert report["tokens_per_sec"] > 0 and report["windows"] == 4
    assert "trainer.tf32=false" in report["overrides"]
    assert not {"mfu", "gemm_gflops", "breakdown_per_step"} & set(report)


def test_quality_then_translate_speed_smoke(tmp_path):
    report = run_benchmark("quality.py", "--smoke", "--run-dir", str(tmp_path))
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val_bleu" in r]
    test = [r for r in records if "test_bleu" in r][-1]
    best = max(validations, key=lambda r: r["val_bleu"])
    assert report["steps"] == 20 and [r["step"] for r in validations] == [10, 20]
    # every figure is the run's own, from its metrics.jsonl
    assert report["test_greedy"]["bleu"] == round(test["test_bleu"], 2)
    assert report["test_greedy"]["checkpoint_step"] == test["test_step"] == best["step"]
    assert report["best_validation"] == {
        "step": best["step"],
        "bleu": round(best["val_bleu"], 2),
        "loss": round(best["val_loss"], 4),
    }
    assert report["validations"] == [
        {"step": r["step"], "epoch": r["epoch"], "val_bleu": round(r["val_bleu"], 2)}
        for r in validations
    ]
    last_log = [r for r in records if "loss" in r][-1]
    assert report["train_seconds"] == round(last_log["elapsed_s"], 1)
    reached = report["time_to_bleu"]  # target 0 in smoke mode: the first checkpoint
    assert reached["reached"] and reached["step"] == 10 and reached["bleu"] >= 0.0
    assert reached["train_seconds"] == validations[0]["elapsed_s"] < last_log["elapsed_s"]
    assert {"bleu", "chrf"} <= set(report["test_greedy"])
    speed = run_benchmark("translate_speed.py", "--checkpoint", str(tmp_path), "--smoke")
    assert speed["sentences"] == 64 and speed["gemm_gflops_2048"] > 0
    for search in ("greedy", "beam5"):
        figures = speed["results"][search]
        assert figures["pass_seconds"] == [figures["seconds"]]  # --smoke: one pass
        assert_rate(figures["sentences_per_sec"], 64, figures["seconds"], 1, 2)
        # mean tokens is rounded to 2 decimals: x 64 sentences recovers the integer count
        tokens = round(figures["mean_output_tokens"] * 64)
        assert abs(tokens - figures["mean_output_tokens"] * 64) <= 64 * 0.005
        assert_rate(figures["target_tokens_per_sec"], tokens, figures["seconds"], 1, 2)
        assert tokens >= 64  # at least the end-of-sentence token each


def test_decode_speed_smoke_counts_tokens_within_the_fixed_number_of_steps():
    report = run_benchmark("decode_speed.py", "--smoke")
    assert (report["sentences"], report["decoding_steps"]) == (48, 8)
    assert report["weights"].startswith("random")
    for search in ("greedy", "beam5"):
        figures = report["results"][search]
        assert figures["longest_output"] <= 8  # the limit holds: max_len_b = steps
        # each sentence: its tokens + EOS; those at the limit 8 + 1, the others fewer
        at_limit = figures["sentences_at_the_limit"]
        assert 9 * at_limit + (48 - at_limit) <= figures["target_tokens"] <= 9 * 48
        assert_rate(figures["target_tokens_per_sec"], figures["target_tokens"],
                    figures["seconds"], 1, 3)  # fmt: skip


def test_checkpoint_io_smoke():
    report = run_benchmark("checkpoint_io.py", "--smoke")
    parameters = sum(p.numel() for p in smoke_model(1000, 1000).parameters())  # vocab 1000
    assert report["parameters"] == parameters and report["repeats"] == 1
    # model + AdamW's two moments, fp32: three copies of the weights, not a fourth
    copy_mb = parameters * 4 / 2**20
    assert 3 * copy_mb - 0.05 <= report["checkpoint_mb"] < 4 * copy_mb
    assert report["async_save_total_s"] >= report["async_save_blocking_s"]  # one clock
    assert report["sync_save_s"] > 0 and report["load_s"] > 0


def test_scaling_smoke_runs_every_setting():
    report = run_benchmark("scaling.py", "--smoke")
    settings = report["settings"]
    assert set(settings) == {"single_1x2threads", "ddp_2x1thread"} and report["steps"] == 4
    assert settings["single_1x2threads"]["threads_per_process"] == 2
    assert settings["ddp_2x1thread"]["threads_per_process"] == 1
    assert all(s["tokens_per_sec"] > 0 for s in settings.values())
    single = settings["single_1x2threads"]["tokens_per_sec"]
    assert report["relative_to_single_process"] == {
        name: round(s["tokens_per_sec"] / single, 3) for name, s in settings.items()
    }
    allreduce_ms = report["gradient_allreduce_ms_per_step"]
    ddp_step_ms = 1000 * settings["ddp_2x1thread"]["step_time_s"]
    assert allreduce_ms > 0
    assert report["allreduce_share_of_ddp_step"] == round(allreduce_ms / ddp_step_ms, 4)
    assert report["parameters"] == sum(p.numel() for p in smoke_model(1000, 1000).parameters())


def test_data_scale_smoke_prepares_and_measures_every_run():
    report = run_benchmark("data_scale.py", "--smoke")
    large = report["prepare_large"]
    assert large["pairs_kept"] == 3000
    assert large["tokens_per_pair"] == round(large["tokens"] / large["pairs_kept"], 1)
    itemsize = {"uint16": 2, "int32": 4, "uint32": 4, "int64": 8}[large["dtype"]]
    assert large["disk_bytes_per_token_of_ids"] >= itemsize  # each id in its dtype, at least
    assert large["disk_bytes_per_token"] >= large["disk_bytes_per_token_of_ids"]
    runs = report["runs"]
    assert set(runs) == {"baseline_2rank", "large_2rank"}
    large_mb, baseline_mb = (
        runs[f"{r}_2rank"]["peak_rss_mb_per_rank"] for r in ("large", "baseline")
    )
    assert len(large_mb) == len(baseline_mb) == 2
    assert all(TRAINING_PROCESS_MIN_MB < mb < physical_memory_mb() for mb in large_mb + baseline_mb)
    assert report["data_memory_mb_per_rank_2rank"] == [a - b for a, b in zip(large_mb, baseline_mb)]
    assert runs["large_2rank"]["seconds_to_first_step"] > 0
    assert report["loader_batches_per_sec"] > 0 and "projection_40M" in report


def test_serve_load_smoke_measures_both_phases(smoke_run):
    report = run_benchmark("serve_load.py", "--checkpoint", str(smoke_run), "--smoke")
    high_water = [report["server_rss_after_start_mb"]]  # VmHWM: it can only grow
    for phase in ("plain", "alignments"):
        figures = report["phases"][phase]
        assert figures["requests"] == 16 and figures["not_200"] == 0
        assert_rate(figures["requests_per_sec"], 16, figures["wall_seconds"], 2, 1)
        assert figures["latency_p99_ms"] >= figures["latency_p50_ms"] > 0
        high_water.append(figures["server_peak_rss_mb"])
    assert high_water == sorted(high_water) and high_water[0] > TRAINING_PROCESS_MIN_MB


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


def test_decode_choices_smoke_chooses_on_validation_then_decodes_test_once(smoke_run):
    report = run_benchmark("decode_choices.py", "--run-dir", str(smoke_run), "--smoke")
    assert len(report["tune_search_valid"]["grid"]) == 3  # greedy once, beam 2 twice
    tuned = report["tune_search_valid"]["best"]
    assert report["search"] == {"beam": tuned["beam"], "alpha": tuned["alpha"]}
    by_name = {c["name"]: c for c in report["candidates"]}
    assert list(by_name) == ["best_checkpoint", "last_2", "to_best_2", "ensemble_2"]
    assert by_name["best_checkpoint"]["checkpoints"] == [report["best_checkpoint"]]
    assert by_name["to_best_2"]["checkpoints"][-1] == report["best_checkpoint"]
    assert all(c["valid_bleu"] is not None for c in report["candidates"])
    chosen = report["chosen"]
    top = max(round(c["valid_bleu"], 2) for c in report["candidates"])
    assert round(chosen["valid_bleu"], 2) == top and report["rule"]
    # the test split is decoded for the chosen candidate only, with the tuned search
    assert chosen["test"]["checkpoints"] and chosen["test"]["beam"] == tuned["beam"]
    keys = {"name", "kind", "checkpoints", "valid_bleu", "valid_chrf"}
    assert all(set(c) == keys for c in report["candidates"])  # no test score among them
    reference = report["reference_points_not_used_for_any_choice"]
    assert (reference["test_greedy"]["beam"], reference["test_beam5"]["beam"]) == (1, 5)


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
    """The stop is asked for at step 12 of 30; the run must say it stopped there and the
    resumed run that it continued from there (no window of steps: no timing decides)."""
    report = run_benchmark("resume_identity.py", "--smoke")
    assert report["sigterm_exit_status"] == 143 and report["sigterm_at_step"] == 12
    assert report["stopped_at_step"] == report["resumed_from_step"] == 12
    assert report["final_step"] == [30, 30]
    assert report["weights_identical"] and report["logged_losses_identical"]
    # bitwise on a CPU: the tolerance gpu_check gives a GPU is not needed here
    assert report["atol"] == report["max_abs_weight_difference"] == 0.0
    assert report["weights_within_atol"] and report["logged_losses_within_atol"]
    assert report["logged_losses_compared"] == report["logged_losses_uninterrupted"] >= 3


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
    measured = report["rounds"][0]["HEAD"]["greedy"]["sentences_per_sec"]
    assert measured > 0
    assert report["median_sentences_per_sec"]["HEAD"]["greedy"] == measured  # one round
    assert report["same_translations"] == {"greedy": True}  # one commit agrees with itself
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True
    )
    assert "speed-checkouts-" not in worktrees.stdout  # removed afterwards


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


def test_multinode_smoke_measures_two_hosts_against_loopback():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from two_hosts import why_they_cannot_start

    if why_they_cannot_start():
        pytest.skip(why_they_cannot_start())
    report = run_benchmark("multinode.py", "--smoke")
    loopback, (name, shaped) = report["loopback_1x2"], *report["two_hosts_2x1"].items()
    assert name == "1gbit/fp16"
    assert shaped["vs_loopback"] == round(shaped["tokens_per_sec"] / loopback["tokens_per_sec"], 3)
    exposed = max(0.0, 1 - loopback["step_time_s"] / shaped["step_time_s"])
    assert shaped["exposed_communication_share"] == round(exposed, 3)
