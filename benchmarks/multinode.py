"""Training throughput across two hosts over a shaped link, and what gradient compression
(`strategy.comm_hook`) buys there:

    python benchmarks/multinode.py               # bench_lstm512, 100 Mbit/s and 1 Gbit/s
    python benchmarks/multinode.py --smoke       # tiny model, 1 Gbit/s, the fp16 hook, no file

Runs train.py for a fixed number of steps, first as 1 host x 2 processes over loopback
(the reference), then as 2 hosts x 1 process (benchmarks/two_hosts.py: two network
namespaces joined by a veth pair, both ends shaped with tc's token bucket filter) at each
rate with each hook. Reports the median target tokens/s of the logging windows after the
first (all processes together), the step time, and the exposed communication: the share
of a step's time beyond the loopback run's step. A CPU step of bench_lstm512 takes seconds,
so 100 Mbit/s here gives the communication-to-compute ratio that a GPU step of tens of
milliseconds meets on a 10-25 Gbit/s network. Needs root (network namespaces). Writes
benchmarks/results/multinode_cpu.json (committed).
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

from results_file import write_result
from scaling import speed_run
from two_hosts import TwoHosts, why_they_cannot_start

from dist_lstm.topology import free_local_port

ROOT = Path(__file__).resolve().parents[1]
HOOK_OVERRIDES = {
    "none": ["strategy.comm_hook=none"],
    "fp16": ["strategy.comm_hook=fp16"],  # (bf16's hook needs a CUDA build of torch)
    # compression from the third step on, so the measured windows see it
    "powersgd_rank1": [
        "strategy.comm_hook=powersgd",
        "strategy.powersgd_rank=1",
        "strategy.powersgd_start_step=2",
    ],
    "powersgd_rank4": [
        "strategy.comm_hook=powersgd",
        "strategy.powersgd_rank=4",
        "strategy.powersgd_start_step=2",
    ],
}


def training(experiment: str, steps: int, run_dir: Path, hook: str) -> list:
    return [
        "train.py",
        "strategy=ddp",
        "logger.wandb.mode=disabled",
        *speed_run(experiment, steps, max(1, steps // 4), run_dir),
        *HOOK_OVERRIDES[hook],
    ]


def speed_of(run_dir: Path, steps: int) -> dict:
    """Median tokens/s and step time of the logging windows, the first (start-up) left out."""
    log_every = max(1, steps // 4)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if "loss" in r and r["step"] > log_every]
    return {
        "tokens_per_sec": round(statistics.median(r["tokens_per_sec"] for r in windows)),
        "step_time_s": round(statistics.median(r["step_time_s"] for r in windows), 3),
        "last_loss": round(windows[-1]["loss"], 4),
    }


def on_loopback(experiment: str, steps: int) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="multinode-loopback-"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{free_local_port()}",
            *training(experiment, steps, run_dir, "none"),
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return speed_of(run_dir, steps)


def on_two_hosts(hosts: TwoHosts, experiment: str, steps: int, hook: str) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"multinode-{hosts.rate}-{hook}-"))
    args = training(experiment, steps, run_dir, hook)
    agents = [
        hosts.agent(i, f"bench-{hook}", args, ROOT, run_dir.parent / f"{run_dir.name}-{i}.log")
        for i in (0, 1)
    ]
    statuses = [agent.wait() for agent in agents]
    if statuses != [0, 0]:
        raise SystemExit(f"{hook} at {hosts.rate} failed ({statuses}): see {run_dir}*.log")
    return speed_of(run_dir, steps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="bench_lstm512")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rates", nargs="+", default=["100mbit", "1gbit"])
    parser.add_argument("--hooks", nargs="+", default=list(HOOK_OVERRIDES))
    parser.add_argument("--smoke", action="store_true", help="tiny model, 4 steps, no file")
    args = parser.parse_args()
    if args.smoke:
        args.experiment, args.steps, args.rates, args.hooks = "smoke", 4, ["1gbit"], ["fp16"]
    reason = why_they_cannot_start()
    if reason:
        raise SystemExit(reason)
    loopback = on_loopback(args.experiment, args.steps)
    settings = {}
    for rate in args.rates:
        hosts = TwoHosts(rate=rate)
        try:
            hosts.create()
            for hook in args.hooks:
                measured = on_two_hosts(hosts, args.experiment, args.steps, hook)
                measured["vs_loopback"] = round(
                    measured["tokens_per_sec"] / loopback["tokens_per_sec"], 3
                )
                exposed = 1 - loopback["step_time_s"] / measured["step_time_s"]
                measured["exposed_communication_share"] = round(max(0.0, exposed), 3)
                settings[f"{rate}/{hook}"] = measured
        finally:
            hosts.destroy()
    report = {
        "model": f"experiment={args.experiment}",
        "steps": args.steps,
        "note": "tokens/s: target tokens per second over both processes; 1 thread each; "
        "exposed_communication_share: 1 - loopback step time / this step time",
        "loopback_1x2": loopback,
        "two_hosts_2x1": settings,
    }
    write_result("multinode_cpu", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
