"""A training stopped by SIGTERM and continued with `resume=auto` against the same
training uninterrupted: are the weights, the optimizer state and every logged loss the
same?

    python benchmarks/resume_identity.py                     # cpu_small, 360 steps (~8 min)
    python benchmarks/resume_identity.py --smoke             # smoke model, 30 steps, no file
    python benchmarks/resume_identity.py --experiment bench_lstm512 --steps 60 \
        --stop-after 30 --atol 1e-4                           # on a GPU (gpu_check.sh)

The interrupted run gets SIGTERM (as a scheduler's preemption sends it) during optimizer
step `--stop-after`: it finishes that step, saves, and exits 143; `resume=auto` then
continues it in the same run directory. The process sends the signal to itself at that
step, so where it stops does not depend on the machine's load (a signal from outside lands
wherever the run has got to, and may come after a short run has finished); the handler,
the save and the exit are those of any SIGTERM. The report records the step asked for, the
step the run says it stopped at and the step the resumed run says it continued from.
Writes benchmarks/results/resume_identity_<experiment>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dist_lstm.checkpoint import load_checkpoint  # noqa: E402


def command(experiment: str, run_dir: Path, steps: int, *extra: str) -> list:
    return [
        sys.executable,
        "train.py",
        f"experiment={experiment}",
        f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=null",
        "trainer.max_time=null",
        "trainer.early_stopping_patience=0",
        "trainer.progress_bar=false",
        "trainer.log_every_steps=10",
        *extra,
    ]


# `python -c SIGTERM_AT_STEP N ARGS...`: train.py ARGS, sending itself SIGTERM during
# optimizer step N (before the step runs: the trainer finishes it, then stops and saves).
SIGTERM_AT_STEP = """
import os, runpy, signal, sys
from dist_lstm.train.trainer import Trainer
stop_at, optimizer_step = int(sys.argv[1]), Trainer._optimizer_step
def step_with_sigterm(self, *args, **kwargs):
    if self.state.step + 1 == stop_at:
        os.kill(os.getpid(), signal.SIGTERM)
    optimizer_step(self, *args, **kwargs)
Trainer._optimizer_step = step_with_sigterm
sys.argv = ["train.py", *sys.argv[2:]]
runpy.run_path("train.py", run_name="__main__")
"""


def step_in_log(run_dir: Path, pattern: str) -> Optional[int]:
    """The step in the last line of the run's train.log matching `pattern` (one group)."""
    found = re.findall(pattern, (run_dir / "train.log").read_text())
    return int(found[-1]) if found else None


def losses(run_dir: Path) -> dict:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def max_abs_difference(a: dict, b: dict) -> float:
    """The largest element-wise difference between two state dicts' floating tensors
    (inf where their keys or shapes differ)."""
    if a.keys() != b.keys():
        return math.inf
    largest = 0.0
    for key, x in a.items():
        if x.shape != b[key].shape:
            return math.inf
        if x.is_floating_point():
            largest = max(largest, (x.double() - b[key].double()).abs().max().item())
        elif not torch.equal(x, b[key]):
            return math.inf
    return largest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="cpu_small")
    parser.add_argument("--steps", type=int, default=360)
    parser.add_argument("--stop-after", type=int, default=170, help="SIGTERM during this step")
    parser.add_argument(
        "--atol",
        type=float,
        default=0.0,
        help="weights and losses may differ by this much (0: bitwise; a GPU's atomic adds "
        "need ~1e-4, benchmarks/gpu_check.py)",
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.experiment, args.steps, args.stop_after = "smoke", 30, 12

    with tempfile.TemporaryDirectory() as scratch:
        whole, cut = Path(scratch) / "whole", Path(scratch) / "interrupted"
        started = time.monotonic()
        subprocess.run(command(args.experiment, whole, args.steps), cwd=ROOT, check=True)
        uninterrupted_s = time.monotonic() - started

        train_args = command(args.experiment, cut, args.steps)[2:]
        stopped_status = subprocess.run(
            [sys.executable, "-c", SIGTERM_AT_STEP, str(args.stop_after), *train_args], cwd=ROOT
        ).returncode
        subprocess.run(
            command(args.experiment, cut, args.steps, "resume=auto"), cwd=ROOT, check=True
        )

        a = load_checkpoint(whole / "checkpoints" / "last")
        b = load_checkpoint(cut / "checkpoints" / "last")
        differing = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
        loss_a, loss_b = losses(whole), losses(cut)
        common = sorted(set(loss_a) & set(loss_b))
        weight_difference = max_abs_difference(a["model"], b["model"])
        loss_difference = max((abs(loss_a[s] - loss_b[s]) for s in common), default=0.0)
        report = {
            "experiment": args.experiment,
            "steps": args.steps,
            "sigterm_exit_status": stopped_status,
            "sigterm_at_step": args.stop_after,
            "stopped_at_step": step_in_log(cut, r"stopped by SIGTERM at step (\d+)"),
            "resumed_from_step": step_in_log(cut, r"resumed from .*: step (\d+)"),
            "final_step": (a["step"], b["step"]),
            "weights_identical": not differing and a["step"] == b["step"],
            "tensors_differing": differing,
            "logged_losses_compared": len(common),
            "logged_losses_uninterrupted": len(loss_a),
            "logged_losses_identical": all(loss_a[s] == loss_b[s] for s in common),
            "atol": args.atol,
            "max_abs_weight_difference": weight_difference,
            "weights_within_atol": weight_difference <= args.atol and a["step"] == b["step"],
            "max_abs_loss_difference": loss_difference,
            "logged_losses_within_atol": bool(common) and loss_difference <= args.atol,
            "uninterrupted_seconds": round(uninterrupted_s, 1),
            "command": "python benchmarks/resume_identity.py " + " ".join(sys.argv[1:]),
        }
    write_result(f"resume_identity_{args.experiment}", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
