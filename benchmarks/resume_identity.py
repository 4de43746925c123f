"""A training stopped by SIGTERM and continued with `resume=auto` against the same
training uninterrupted: are the weights, the optimizer state and every logged loss the
same?

    python benchmarks/resume_identity.py                     # cpu_small, 360 steps (~8 min)
    python benchmarks/resume_identity.py --smoke             # smoke model, 60 steps, no file

The interrupted run gets SIGTERM (as a scheduler's preemption sends it) once its log shows
`--stop-after` steps; it saves where it stands and exits 143; `resume=auto` then continues
it in the same run directory. Writes benchmarks/results/resume_identity_<experiment>.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line]
    return max(steps, default=0)


def losses(run_dir: Path) -> dict:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="cpu_small")
    parser.add_argument("--steps", type=int, default=360)
    parser.add_argument("--stop-after", type=int, default=170, help="SIGTERM after this step")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.experiment, args.steps, args.stop_after = "smoke", 60, 25

    with tempfile.TemporaryDirectory() as scratch:
        whole, cut = Path(scratch) / "whole", Path(scratch) / "interrupted"
        started = time.monotonic()
        subprocess.run(command(args.experiment, whole, args.steps), cwd=ROOT, check=True)
        uninterrupted_s = time.monotonic() - started

        proc = subprocess.Popen(command(args.experiment, cut, args.steps), cwd=ROOT)
        while proc.poll() is None and logged_steps(cut) < args.stop_after:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stopped_status = proc.wait()
        stopped_at = logged_steps(cut)
        subprocess.run(
            command(args.experiment, cut, args.steps, "resume=auto"), cwd=ROOT, check=True
        )

        a = load_checkpoint(whole / "checkpoints" / "last")
        b = load_checkpoint(cut / "checkpoints" / "last")
        differing = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
        loss_a, loss_b = losses(whole), losses(cut)
        common = sorted(set(loss_a) & set(loss_b))
        report = {
            "experiment": args.experiment,
            "steps": args.steps,
            "sigterm_exit_status": stopped_status,
            "stopped_after_step": stopped_at,
            "final_step": (a["step"], b["step"]),
            "weights_identical": not differing and a["step"] == b["step"],
            "tensors_differing": differing,
            "logged_losses_compared": len(common),
            "logged_losses_identical": all(loss_a[s] == loss_b[s] for s in common),
            "uninterrupted_seconds": round(uninterrupted_s, 1),
            "command": "python benchmarks/resume_identity.py " + " ".join(sys.argv[1:]),
        }
    write_result(f"resume_identity_{args.experiment}", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
