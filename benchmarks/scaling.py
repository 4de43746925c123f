"""Training throughput on one machine: 1 process x N threads vs N processes x 1 thread.

    python benchmarks/scaling.py                  # cpu_small model, 40 steps per setting
    python benchmarks/scaling.py --steps 100
    python benchmarks/scaling.py --smoke          # tiny model, 4 steps, no ZeRO, no file

Runs `train.py experiment=cpu_small` for a fixed number of steps in each setting (single
process; DDP and DeepSpeed ZeRO-1, 2 and 3 over torchrun) and reads the target tokens/s that
training logged, leaving out the first logging window (start-up). A separate probe times
the gradient all-reduce of one step (all parameters, gloo or NCCL). Writes
benchmarks/results/scaling_<device>.json (committed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_config import compose_config
from results_file import write_result

from dist_lstm.topology import free_local_port

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import os, time, torch, torch.distributed as dist
dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if torch.cuda.is_available() else "cpu"
grads = torch.randn(int(os.environ["NUMEL"]), device=device)
for _ in range(3):
    dist.all_reduce(grads)
times = []
for _ in range(20):
    if torch.cuda.is_available(): torch.cuda.synchronize()
    start = time.perf_counter(); dist.all_reduce(grads)
    if torch.cuda.is_available(): torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
if dist.get_rank() == 0:
    times.sort(); print("ALLREDUCE_MS", 1000 * times[len(times) // 2])
dist.destroy_process_group()
"""


def torchrun(nproc: int) -> list:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{free_local_port()}",
    ]


def speed_run(experiment: str, steps: int, log_every: int, run_dir: Path) -> list:
    """train.py overrides for a fixed number of steps that measure speed: one short
    validation at the end, no test decode, logging every `log_every` steps."""
    return [
        f"experiment={experiment}",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=null",
        "trainer.max_time=null",
        f"trainer.val_every_steps={steps}",
        f"trainer.log_every_steps={log_every}",
        "trainer.progress_bar=false",
        "data.max_valid_examples=50",
        "data.test_src=null",
        "data.test_tgt=null",
        f"hydra.run.dir={run_dir}",
    ]


def measure(
    name: str, launcher: list, threads: int, steps: int, extra: list, experiment: str
) -> dict:
    """Median target tokens/s of train.py's logging windows, the first (start-up) left out."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"scaling-{name}-"))
    log_every = max(1, min(10, steps // 4))
    overrides = [*speed_run(experiment, steps, log_every, run_dir), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(
        [*launcher, "train.py", *overrides],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if "loss" in r and r["step"] > log_every]
    return {
        "tokens_per_sec": round(statistics.median(r["tokens_per_sec"] for r in windows)),
        "step_time_s": round(statistics.median(r["step_time_s"] for r in windows), 3),
        "threads_per_process": threads,
    }


def allreduce_ms(nproc: int, numel: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMEL": str(numel)}
    probe = Path(tempfile.mkdtemp(prefix="allreduce-")) / "probe.py"
    probe.write_text(PROBE)
    out = subprocess.run(
        [*torchrun(nproc), str(probe)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(
        next(line for line in out.splitlines() if line.startswith("ALLREDUCE_MS")).split()[1]
    )


def parameter_count(experiment: str) -> int:
    """Parameter count of the experiment's model (the configured vocabulary on both sides)."""
    from dist_lstm.model import build_model

    cfg = compose_config([f"experiment={experiment}"])
    vocab = cfg.data.tokenizer.vocab_size
    return sum(p.numel() for p in build_model(cfg.model, vocab, vocab).parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--experiment", default="cpu_small")
    parser.add_argument("--zero-stages", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--smoke", action="store_true", help="tiny model, 4 steps, no file")
    args = parser.parse_args()
    if args.smoke:  # DeepSpeed runs measure() like DDP; tests/integration trains them
        args.experiment, args.steps, args.zero_stages = "smoke", 4, []
    n, steps, experiment = args.processes, args.steps, args.experiment
    settings = {
        f"single_1x{n}threads": measure("single", [sys.executable], n, steps, [], experiment),
        f"ddp_{n}x1thread": measure("ddp", torchrun(n), 1, steps, ["strategy=ddp"], experiment),
    }
    for stage in args.zero_stages:
        settings[f"zero{stage}_{n}x1thread"] = measure(
            f"zero{stage}",
            torchrun(n),
            1,
            steps,
            ["strategy=deepspeed", f"strategy.zero_stage={stage}"],
            experiment,
        )
    numel = parameter_count(experiment)
    single = settings[f"single_1x{n}threads"]["tokens_per_sec"]
    report = {
        "model": f"experiment={experiment}",
        "parameters": numel,
        "steps": steps,
        "note": "tokens/s = target tokens per second over all processes",
        "settings": settings,
        "relative_to_single_process": {
            name: round(setting["tokens_per_sec"] / single, 3) for name, setting in settings.items()
        },
        "gradient_allreduce_ms_per_step": round(allreduce_ms(n, numel), 2),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    ddp_step_ms = 1000 * settings[f"ddp_{n}x1thread"]["step_time_s"]
    report["allreduce_share_of_ddp_step"] = round(
        report["gradient_allreduce_ms_per_step"] / ddp_step_ms, 4
    )
    write_result(f"scaling_{report['device']}", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
