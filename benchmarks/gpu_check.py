"""The GPU check behind `bash benchmarks/gpu_check.sh`: one call on a machine with a GPU,
about 6 minutes, a complete verdict in benchmarks/results/gpu_check.json.

    bash benchmarks/gpu_check.sh              # on the GPU machine
    bash benchmarks/gpu_check.sh --dry-run    # anywhere: the plan and its time budget
    bash benchmarks/gpu_check.sh --only resume_identity_bench_lstm512,cuda_tests

It cannot pass falsely. Where `nvidia-smi -L` or /dev/nvidia* shows a GPU, it exits 0 only
if every check of the plan ran and passed: torch that does not import, a driver that does
not fit torch's CUDA, a package missing, a failing check and a check stopped by its own
limit or by the overall budget each give a failing report naming torch's CUDA version, the
driver and the error. Without any sign of a GPU it says so and exits 0, running nothing.

The GPU machine has no network: the packages it lacks travel as wheels in
benchmarks/wheels (made by benchmarks/gpu_wheels.sh where pip reaches an index), installed
first with `pip install --no-index --no-deps` into a folder of this run, then every import
the checks need is tried before any check starts.

This file imports only the standard library, so it reports even where torch is broken.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT = ROOT / "benchmarks" / "results" / "gpu_check.json"
DEFAULT_WHEELS = ROOT / "benchmarks" / "wheels"
# The whole call: the GPU is lent for ~15 minutes, one command may run 10, starting takes some.
DEFAULT_BUDGET_S = 360
# Characters of each check's output kept in the report for diagnosis (figures are parsed
# into fields; this is only the end of the log).
OUTPUT_TAIL_CHARS = 1500

# Modules every check needs, tried in one process before any check starts.
REQUIRED_MODULES = (
    "torch",
    "numpy",
    "hydra",
    "omegaconf",
    "sentencepiece",
    "sacrebleu",
    "rich",
    "matplotlib",
    "psutil",
    "wandb",
    "deepspeed",
    "pytest",
    "dist_lstm",
)

# The smoke model on the GPU, as tests/gpu/test_cuda.py's own runs: 40 steps, logs at
# 1, 10, ..., 40, validation at the end.
SMOKE = (
    "experiment=smoke",
    "trainer.progress_bar=false",
    "trainer.device=cuda",
    "trainer.max_steps=40",
    "trainer.val_every_steps=40",
)
NO_TEST_DECODE = ("data.test_src=null", "data.test_tgt=null")
# The translate check's input file (written into the call's folder) and its one line.
TRANSLATE_INPUT = ("translate_input.de", "Ein Hund läuft durch den Schnee.")
# The warning cuDNN gives when an RNN's weights are not in its one buffer (DeepSpeed's
# ZeRO re-points them into its own), counted in the DeepSpeed check's output.
CONTIGUOUS_CHUNK_WARNING = "not part of single contiguous chunk of memory"
# A resumed run's weights may differ from the uninterrupted run's by this much on a GPU
# (atomic adds in embedding backward are not bit-reproducible); cuDNN's own inter-layer
# dropout, redrawn after a resume, moved weights by ~1e-3 in 30 steps.
RESUME_ATOL = 1e-4


# Expected seconds of each check on one H100/H200 with 16 cores: guesses from the CPU
# machines' start-up times until a GPU run measures them (each check's "seconds").
ESTIMATES_S = {
    "train_32": 25,
    "resume_identity_bench_lstm512": 70,
    "train_bf16": 20,
    "train_fp16": 20,
    "cuda_tests": 35,
    "ddp_nccl": 25,
    "deepspeed_zero2_nccl": 35,
    "translate": 10,
    "train_speed_tf32": 35,
    "train_speed_bf16": 20,
    "train_speed_fp32_strict": 20,
    "train_speed_fp16": 20,
    "decode_speed": 15,
}


@dataclass
class Outcome:
    """What a finished command left: exit status, output, and the run directory."""

    status: int
    output: str
    work: Path


@dataclass
class Check:
    """One command of the plan, its own time limit and how its result is judged.

    `judge(outcome)` returns (problem or None, figures): a check passes only with exit
    status 0 and no problem."""

    name: str
    what: str
    command: List[str]
    limit_s: int
    judge: Callable[[Outcome], Tuple[Optional[str], Dict[str, Any]]] = field(repr=False)
    env: Dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# Judging outputs: figures kept whole, as fields


def last_json_object(output: str) -> Optional[Dict[str, Any]]:
    """The last top-level JSON object a benchmark printed (write_result's `{ ... }`)."""
    found = re.findall(r"^\{$.*?^\}$", output, re.MULTILINE | re.DOTALL)
    for text in reversed(found):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            continue
    return None


def pytest_counts(output: str) -> Dict[str, int]:
    """passed/failed/skipped/error counts from pytest's closing line."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    if lines:
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", lines[-1]):
            counts["errors" if word.startswith("error") else word] = int(number)
    return counts


def judge_pytest(outcome: Outcome) -> Tuple[Optional[str], Dict[str, Any]]:
    """Every collected CUDA test ran and passed: a skip means the GPU went unseen."""
    counts = pytest_counts(outcome.output)
    problem = None
    if counts["passed"] == 0:
        problem = "no test passed"
    elif counts["failed"] or counts["errors"]:
        problem = f"{counts['failed']} failed, {counts['errors']} errors"
    elif counts["skipped"]:
        problem = f"{counts['skipped']} skipped: every CUDA test must run on a GPU"
    return problem, counts


def read_metrics(run_dir: Path) -> List[Dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_figures(run_dir: Path, steps: int) -> Tuple[Optional[str], Dict[str, Any]]:
    """A run reached `steps` with finite losses: its loss, tokens/s and peak memory."""
    records = read_metrics(run_dir)
    logs = [r for r in records if "loss" in r]
    if not logs:
        return f"no training record in {run_dir / 'metrics.jsonl'}", {}
    windows = [r for r in logs if "tokens_per_sec" in r]
    figures = {
        "final_step": logs[-1]["step"],
        "first_loss": logs[0]["loss"],
        "final_loss": logs[-1]["loss"],
        "tokens_per_sec_median": (
            statistics.median(r["tokens_per_sec"] for r in windows) if windows else None
        ),
        "peak_memory_mb": max((r.get("memory_mb") or 0.0) for r in logs),
    }
    validations = [r for r in records if "val_bleu" in r]
    if validations:
        figures["val_bleu"] = validations[-1]["val_bleu"]
    tests = [r for r in records if "test_bleu" in r]
    if tests:
        figures["test_bleu"] = tests[-1]["test_bleu"]
    if logs[-1]["step"] != steps:
        return f"stopped at step {logs[-1]['step']}, not {steps}", figures
    if not all(math.isfinite(r["loss"]) for r in logs):
        return "a logged loss is not finite", figures
    return None, figures


def judge_training(run_dir: Path, steps: int) -> Callable[[Outcome], Tuple]:
    def judge(outcome: Outcome) -> Tuple[Optional[str], Dict[str, Any]]:
        return training_figures(run_dir, steps)

    return judge


def judge_benchmark(required: Callable[[Dict[str, Any]], Optional[str]]) -> Callable:
    """The benchmark's whole JSON report as figures; `required` names what is wrong in it."""

    def judge(outcome: Outcome) -> Tuple[Optional[str], Dict[str, Any]]:
        report = last_json_object(outcome.output)
        if report is None:
            return "no JSON report in the output", {}
        return required(report), report

    return judge


def resume_problem(report: Dict[str, Any]) -> Optional[str]:
    """Stopped and resumed where asked, weights and losses within the GPU tolerance."""
    if report.get("stopped_at_step") != report.get("sigterm_at_step"):
        return f"stopped at {report.get('stopped_at_step')}, asked {report.get('sigterm_at_step')}"
    if report.get("resumed_from_step") != report.get("sigterm_at_step"):
        return f"resumed from {report.get('resumed_from_step')}"
    if not report.get("weights_within_atol"):
        differing = len(report.get("tensors_differing", []))
        return (
            f"weights differ by up to {report.get('max_abs_weight_difference')} "
            f"(tolerance {report.get('atol')}) in {differing} tensors"
        )
    if not report.get("logged_losses_within_atol"):
        return f"logged losses differ by up to {report.get('max_abs_loss_difference')}"
    return None


def positive(*keys: str) -> Callable[[Dict[str, Any]], Optional[str]]:
    """Each of `keys` (dotted paths) is a positive number in the report."""

    def required(report: Dict[str, Any]) -> Optional[str]:
        for key in keys:
            value: Any = report
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if not isinstance(value, (int, float)) or not value > 0:
                return f"{key} is {value!r}, not a positive figure"
        return None

    return required


def judge_translate(output_file: Path) -> Callable[[Outcome], Tuple]:
    """One non-empty translation in the file `dist-lstm translate --output` wrote."""

    def judge(outcome: Outcome) -> Tuple[Optional[str], Dict[str, Any]]:
        lines = output_file.read_text().splitlines() if output_file.is_file() else []
        if len(lines) != 1 or not lines[0].strip():
            return f"expected one translation in {output_file}, found {lines!r}", {}
        return None, {"translation": lines[0]}

    return judge


# ----------------------------------------------------------------------------------------
# The plan


def plan(work: Path, python: str = sys.executable) -> List[Check]:
    """Every check, most valuable first (a budget cut takes the tail)."""
    runs = {precision: work / f"train_{precision}" for precision in ("32", "bf16", "fp16")}
    train = [python, "train.py", *SMOKE]
    torchrun = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    speed = [python, "benchmarks/train_speed.py", "--steps", "40", "--warmup", "10"]
    speed_figures = judge_benchmark(positive("tokens_per_sec"))
    # MFU against the rated peak too where train_speed knows the GPU (not required: a
    # part missing from its table is reported as null, not a failed check)
    mfu_figures = judge_benchmark(positive("tokens_per_sec", "mfu.vs_measured_gemm.mfu"))
    checks = [
        Check(
            "train_32",
            "smoke model, fp32 (TF32 products), 40 steps, validation, and the test split decoded "
            "on the GPU as `dist-lstm evaluate` does (Translator, sacreBLEU)",
            [*train, f"hydra.run.dir={runs['32']}"],
            90,
            judge_training(runs["32"], 40),
        ),
        Check(
            "resume_identity_bench_lstm512",
            "bench_lstm512 (2-layer encoder, dropout 0.3): SIGTERM at step 30 of 60 and "
            "resume=auto against an uninterrupted run, weights and losses within "
            f"{RESUME_ATOL:g}",
            [
                python,
                "benchmarks/resume_identity.py",
                "--experiment=bench_lstm512",
                "--steps=60",
                "--stop-after=30",
                f"--atol={RESUME_ATOL}",
            ],
            150,
            judge_benchmark(resume_problem),
        ),
        *(
            Check(
                f"train_{precision}",
                f"smoke model, {precision} autocast, 40 steps, validation",
                [
                    *train,
                    f"strategy.precision={precision}",
                    *NO_TEST_DECODE,
                    f"hydra.run.dir={runs[precision]}",
                ],
                75,
                judge_training(runs[precision], 40),
            )
            for precision in ("bf16", "fp16")
        ),
        Check(
            "cuda_tests",
            "tests/gpu (marker cuda), reading the train_* runs of this call; its smoke "
            "resume test is left to resume_identity_bench_lstm512",
            [
                python,
                "-m",
                "pytest",
                "-q",
                "-n",
                "0",
                "-p",
                "no:cacheprovider",
                "tests/gpu",
                "--deselect",  # three more trainings; the bench_lstm512 resume check is stricter
                "tests/gpu/test_cuda.py::test_resume_on_the_gpu_matches_an_uninterrupted_run",
            ],
            120,
            judge_pytest,
            env={"DIST_LSTM_TEST_CUDA": "1", "DIST_LSTM_GPU_RUNS": str(work)},
        ),
        Check(
            "ddp_nccl",
            "torchrun --nproc_per_node=1, strategy=ddp over NCCL (setup and placement)",
            [
                *torchrun,
                "train.py",
                *SMOKE,
                *NO_TEST_DECODE,
                "strategy=ddp",
                "strategy.backend=nccl",
                f"hydra.run.dir={work / 'ddp'}",
            ],
            90,
            judge_training(work / "ddp", 40),
        ),
        Check(
            "deepspeed_zero2_nccl",
            "torchrun --nproc_per_node=1, DeepSpeed ZeRO-2 over NCCL; counts cuDNN's "
            "'not part of single contiguous chunk' warnings",
            [
                *torchrun,
                "train.py",
                *SMOKE,
                *NO_TEST_DECODE,
                "strategy=deepspeed",
                "strategy.zero_stage=2",
                "strategy.backend=nccl",
                f"hydra.run.dir={work / 'zero2'}",
            ],
            120,
            judge_training(work / "zero2", 40),
        ),
        Check(
            "translate",
            "dist-lstm translate on the GPU, beam 5, from the train_32 run",
            [
                python,
                "-c",
                "import sys; from dist_lstm.cli import main; sys.exit(main())",
                "translate",
                "--checkpoint",
                str(runs["32"]),
                "--input",
                str(work / TRANSLATE_INPUT[0]),
                "--output",
                str(work / "translate_output.en"),
                "--device",
                "cuda",
                "--beam",
                "5",
            ],
            45,
            judge_translate(work / "translate_output.en"),
        ),
        Check(
            "train_speed_tf32",
            "bench_lstm512 training, fp32 with TF32 products (the default): tokens/s, peak "
            "memory, MFU against the measured TF32 GEMM and the GPU's rated TF32 peak",
            [*speed, "--breakdown-steps", "5", "--gemm-seconds", "0.25", "--tf32", "on"],
            75,
            mfu_figures,
        ),
        Check(
            "train_speed_bf16",
            "bench_lstm512 training, bf16 autocast: tokens/s, peak memory",
            [*speed, "--throughput-only", "--precision", "bf16"],
            45,
            speed_figures,
        ),
        Check(
            "train_speed_fp32_strict",
            "bench_lstm512 training, strict fp32 (TF32 off): tokens/s, peak memory",
            [*speed, "--throughput-only", "--tf32", "off"],
            45,
            speed_figures,
        ),
        Check(
            "train_speed_fp16",
            "bench_lstm512 training, fp16 autocast with its grad scaler: tokens/s, peak memory",
            [*speed, "--throughput-only", "--precision", "fp16"],
            45,
            speed_figures,
        ),
        Check(
            "decode_speed",
            "bench_lstm512-size model (random weights), greedy and beam 5, a fixed number "
            "of decoding steps: target tokens/s",
            [python, "benchmarks/decode_speed.py"],
            45,
            judge_benchmark(positive("results.greedy.target_tokens_per_sec")),
        ),
    ]
    return checks


# ----------------------------------------------------------------------------------------
# The machine: GPU signs, driver, wheels, imports


def gpu_signs(dev_glob: str = "/dev/nvidia[0-9]*") -> List[str]:
    """What shows a GPU here without torch: `nvidia-smi -L` lines and /dev/nvidia<N>."""
    signs = []
    if shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listed = ""
        signs += [line.strip() for line in listed.splitlines() if line.startswith("GPU ")]
    signs += sorted(glob.glob(dev_glob))
    return signs


def driver_facts() -> Dict[str, Optional[str]]:
    """GPU name and driver version as nvidia-smi (or the kernel module) reports them."""
    facts: Dict[str, Optional[str]] = {"gpu": None, "driver": None}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        first = out.strip().splitlines()[0] if out.strip() else ""
        if "," in first:
            facts["gpu"], facts["driver"] = (part.strip() for part in first.rsplit(",", 1))
    version_file = Path("/proc/driver/nvidia/version")
    if facts["driver"] is None and version_file.is_file():
        found = re.search(r"Kernel Module\s+(\S+)", version_file.read_text(errors="replace"))
        facts["driver"] = found.group(1) if found else None
    return facts


def install_wheels(wheels: Path, site: Path, python: str) -> Tuple[Optional[str], List[str]]:
    """pip install --no-index --no-deps every wheel of `wheels` into `site`; (error, names)."""
    files = sorted(str(p) for p in wheels.glob("*.whl")) if wheels.is_dir() else []
    if not files:
        return None, []
    command = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    command += ["--disable-pip-version-check", "--upgrade", "--target", str(site), *files]
    proc = subprocess.run(command, capture_output=True, text=True)
    names = [Path(f).name for f in files]
    if proc.returncode != 0:
        return f"pip install from {wheels} failed: {(proc.stderr or proc.stdout)[-800:]}", names
    return None, names


PREFLIGHT = """
import importlib, json, sys
facts = {"python": sys.version.split()[0], "missing": {}}
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # any failure to import is a finding, not a crash
        facts["missing"][name] = f"{type(exc).__name__}: {exc}"[:300]
        continue
    if name == "torch":
        facts["torch"] = module.__version__
        facts["torch_cuda"] = module.version.cuda
        try:
            facts["cuda_available"] = module.cuda.is_available()
            if facts["cuda_available"]:
                facts["device_name"] = module.cuda.get_device_name(0)
                facts["capability"] = list(module.cuda.get_device_capability(0))
                facts["cudnn"] = module.backends.cudnn.version()
                facts["device_count"] = module.cuda.device_count()
        except Exception as exc:
            facts["cuda_error"] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(facts))
"""


def preflight(python: str, env: Dict[str, str]) -> Dict[str, Any]:
    """Imports and CUDA as the checks will see them, in a process of their own."""
    proc = subprocess.run(
        [python, "-c", PREFLIGHT, *REQUIRED_MODULES],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
    )
    found = re.findall(r"^\{.*\}$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not found:
        return {"preflight_error": (proc.stderr or proc.stdout)[-800:] or f"exit {proc.returncode}"}
    return json.loads(found[-1])


def preflight_error(facts: Dict[str, Any], driver: Optional[str]) -> Optional[str]:
    """Why the checks cannot start here, naming torch's CUDA, the driver and the fix."""
    if "preflight_error" in facts:
        return f"the import check itself failed: {facts['preflight_error']}"
    missing = facts.get("missing", {})
    if "torch" in missing:
        return f"import torch failed: {missing['torch']}"
    if facts.get("torch_cuda") is None:
        return (
            f"torch {facts.get('torch')} is a build without CUDA, but this machine shows a GPU "
            f"(driver {driver}): use the CUDA build of torch."
        )
    if not facts.get("cuda_available"):
        return (
            f"torch {facts.get('torch')} (CUDA {facts.get('torch_cuda')}) sees no GPU with "
            f"driver {driver}: the driver may be too old for this CUDA, or the device hidden "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}). "
            f"{facts.get('cuda_error', '')}".strip()
        )
    if missing:
        names = ", ".join(f"{k} ({v})" for k, v in missing.items())
        return (
            f"cannot import {names}: run benchmarks/gpu_wheels.sh on a machine with a package "
            "index and bring benchmarks/wheels along."
        )
    return None


# ----------------------------------------------------------------------------------------
# Running the plan within the budget


def run_command(check: Check, env: Dict[str, str], seconds: float, log: Path) -> Tuple[int, bool]:
    """Run the check's command for at most `seconds`; (exit status, cut off). Its whole
    process group is killed when cut off (torchrun's workers, train.py's children)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            check.command,
            cwd=ROOT,
            env={**env, **check.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=max(seconds, 0.0)), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(), True


def run_plan(
    checks: Sequence[Check], env: Dict[str, str], budget_s: float, work: Path
) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Each check in order, each within min(its limit, what is left of the budget); a
    check whose turn comes after the budget is spent is listed as not run."""
    deadline = time.monotonic() + budget_s
    results, not_run = [], []
    for check in checks:
        left = deadline - time.monotonic()
        if left <= 0:
            not_run.append(check.name)
            print(f"gpu_check: {check.name}: NOT RUN (overall budget of {budget_s:g} s spent)")
            continue
        log = work / f"{check.name}.log"
        started = time.monotonic()
        status, cut = run_command(check, env, min(check.limit_s, left), log)
        seconds = round(time.monotonic() - started, 1)
        output = log.read_text(errors="replace")
        stopped = None
        if cut:
            stopped = "check limit" if check.limit_s <= left else "overall budget"
        problem, figures = None, {}
        try:
            problem, figures = check.judge(Outcome(status, output, work))
        except Exception as exc:  # a judge that cannot read the output is a failed check
            problem = f"cannot read the result: {type(exc).__name__}: {exc}"
        if stopped:
            problem = f"stopped by the {stopped} after {seconds} s"
        elif status != 0:
            problem = f"exit status {status}" + (f"; {problem}" if problem else "")
        result = {
            "check": check.name,
            "what": check.what,
            "ok": problem is None,
            "status": status,
            "seconds": seconds,
            "limit_s": check.limit_s,
            "stopped_by": stopped,
            "problem": problem,
            "figures": figures,
            # cuDNN copying an RNN's weights at every call (DeepSpeed's re-pointed ones)
            "contiguous_chunk_warnings": output.count(CONTIGUOUS_CHUNK_WARNING),
            "command": " ".join(check.command),
            "output_tail": output[-OUTPUT_TAIL_CHARS:],
        }
        results.append(result)
        verdict = "ok" if problem is None else f"FAILED: {problem}"
        print(f"gpu_check: {check.name}: {verdict} in {seconds}s", flush=True)
    return results, not_run


def report_of(
    machine: Dict[str, Any], results: List[Dict[str, Any]], not_run: List[str], error: Optional[str]
) -> Dict[str, Any]:
    """The verdict: all_ok only with no error, nothing left unrun and every check passed."""
    return {
        **machine,
        "all_ok": error is None and not not_run and bool(results) and all(r["ok"] for r in results),
        "error": error,
        "checks_passed": sum(r["ok"] for r in results),
        "checks_planned": len(results) + len(not_run),
        "not_run": not_run,
        "checks": results,
    }


def write_report(report: Dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def print_plan(checks: Sequence[Check], budget_s: float, wheels: Path) -> None:
    """--dry-run: what one call runs, each check's limit, and the budget."""
    files = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    size = sum(p.stat().st_size for p in files) / 2**20
    print(f"gpu_check plan: {len(checks)} checks, overall budget {budget_s:g} s")
    print(f"wheels: {len(files)} in {wheels} ({size:.1f} MiB), installed with --no-index --no-deps")
    print(f"imports tried first: {', '.join(REQUIRED_MODULES)}")
    for check in checks:
        expected = ESTIMATES_S.get(check.name, 0)
        print(f"  {check.name:<30} ~{expected:>3} s (limit {check.limit_s:>3} s)  {check.what}")
        print(f"  {'':<30}   $ {' '.join(check.command)}")
    expected = sum(ESTIMATES_S.get(check.name, 0) for check in checks)
    print(
        f"expected ~{expected} s in all (estimates until a GPU run reports each check's "
        f"seconds); the overall budget stops the call at {budget_s:g} s and fails what it cut"
    )


def selected(checks: List[Check], names: Optional[List[str]]) -> List[Check]:
    """The checks named (all without names), in the plan's order."""
    return [c for c in checks if names is None or c.name in names]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its budget")
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds, whole call"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_REPORT, help="the report file")
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="wheel folder")
    parser.add_argument("--only", help="comma-separated check names (a rerun of some)")
    args = parser.parse_args(argv)
    python = sys.executable
    wanted = args.only.split(",") if args.only else None
    # the call's folder (runs, logs, installed wheels) is made only when checks will run
    checks = plan(Path(tempfile.gettempdir()) / "gpu_check.XXXX", python)
    unknown = set(wanted or ()) - {c.name for c in checks}
    if unknown:
        print(f"gpu_check: unknown check {sorted(unknown)}; see --dry-run", file=sys.stderr)
        return 2
    checks = selected(checks, wanted)
    if args.dry_run:
        print_plan(checks, args.budget, args.wheels)
        return 0
    signs = gpu_signs()
    if not signs:
        print(
            "gpu_check: no CUDA GPU on this machine (no GPU in `nvidia-smi -L`, no "
            "/dev/nvidia*): nothing to check."
        )
        return 0
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="gpu_check."))
    checks = selected(plan(work, python), wanted)
    machine: Dict[str, Any] = {
        "gpu_signs": signs,
        **driver_facts(),
        "budget_s": args.budget,
        "work_dir": str(work),
    }
    site = work / "site"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), str(site), os.environ.get("PYTHONPATH", "")) if p
        ),
        "PATH": os.pathsep.join((str(site / "bin"), os.environ.get("PATH", ""))),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4"),
        "WANDB_MODE": "disabled",
        "DIST_LSTM_CACHE": os.environ.get("DIST_LSTM_CACHE", "/tmp/dist-lstm-gpu-cache"),
    }
    error, installed = install_wheels(args.wheels, site, python)
    machine["wheels_installed"] = installed
    if error is None:
        facts = preflight(python, env)
        machine.update({k: v for k, v in facts.items() if k != "missing"})
        machine["missing_modules"] = facts.get("missing", {})
        error = preflight_error(facts, machine.get("driver"))
    results: List[Dict[str, Any]] = []
    not_run = [c.name for c in checks]
    if error is None:
        (work / TRANSLATE_INPUT[0]).write_text(TRANSLATE_INPUT[1] + "\n", encoding="utf-8")
        left = args.budget - (time.monotonic() - started)
        results, not_run = run_plan(checks, env, left, work)
    else:
        print(f"gpu_check: FAILED before any check: {error}")
    machine["seconds"] = round(time.monotonic() - started, 1)
    report = report_of(machine, results, not_run, error)
    write_report(report, args.out)
    print(
        f"gpu_check: {report['checks_passed']}/{report['checks_planned']} checks passed "
        f"in {machine['seconds']} s ({'ok' if report['all_ok'] else 'FAILED'}); {args.out}"
    )
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
