"""Each benchmark script's --smoke mode runs end to end, so the scripts cannot rot.
The figures themselves are measured by running the scripts, never asserted here."""

import json
import os
import subprocess
import sys

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
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def test_train_speed_smoke_reports_throughput_mfu_and_breakdown():
    report = run_benchmark("train_speed.py", "--smoke")
    assert report["tokens_per_sec"] > 0 and report["peak_rss_mb"] > 0
    assert 0 < report["mfu_vs_2048_gemm"] and report["model_gflop_per_target_token"] > 0
    phases = report["breakdown_per_step"]
    assert phases["forward_s"] > 0 and phases["backward_s"] > 0 and phases["optimizer_s"] > 0
