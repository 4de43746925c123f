"""What each training ingredient gives: one recipe trained once as it is and once with
each ingredient changed, every run for the same number of epochs, all scored alike.

    python benchmarks/ablations.py --run-root /tmp/ablations          # cpu_small, 12 epochs
    python benchmarks/ablations.py --run-root R --parallel 2          # two runs at a time
    python benchmarks/ablations.py --run-root R --variants baseline word_dropout_0.1
    python benchmarks/ablations.py --smoke --run-root R               # quick check, no file

A fixed number of epochs (not minutes) makes the runs comparable however busy the
machine is, so runs may share the cores. Each variant trains in RUN_ROOT/<variant> with
resume=auto and keeps its scores there: run the command again after a stop and finished
variants are skipped, an interrupted one continues. Writes
benchmarks/results/ablations_<experiment>[_<label>].json with the command of every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from quality import machine, read_run_metrics, test_scores
from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]

# Each changes one ingredient of the recipe; "baseline" is the recipe as shipped.
VARIANTS: Dict[str, List[str]] = {
    "baseline": [],
    "no_label_smoothing": ["trainer.label_smoothing=0.0"],
    "untied_embeddings": ["model.tie_embeddings=false"],
    "dropout_0.1": ["model.dropout=0.1"],
    "word_dropout_0.1": ["model.word_dropout=0.1"],
    "constant_lr": ["optim.schedule=constant"],
}
SCORES = "ablation_scores.json"  # per variant, in its run directory


def train_command(experiment: str, run_dir: Path, epochs: int, overrides: List[str]) -> list:
    return [
        sys.executable,
        "train.py",
        f"experiment={experiment}",
        f"hydra.run.dir={run_dir}",
        f"trainer.max_epochs={epochs}",
        "trainer.max_time=null",  # the epoch count is the budget
        "trainer.early_stopping_patience=0",
        "trainer.progress_bar=false",
        "logger.wandb.mode=disabled",
        "resume=auto",
        *overrides,
    ]


def scores_of(run_dir: Path, overrides: List[str], beam: int) -> dict:
    """Best validation, and test BLEU/chrF of the best checkpoint (greedy, beam)."""
    validations, best, test, _ = read_run_metrics(run_dir)
    return {
        "overrides": overrides,
        "steps": validations[-1]["step"],
        "best_validation": {"step": best["step"], "bleu": round(best["val_bleu"], 2)},
        "test_greedy": {"bleu": round(test["test_bleu"], 2), "chrf": round(test["test_chrf"], 2)},
        f"test_beam{beam}": test_scores(run_dir, beam),
    }


def run_variants(args, variants: Dict[str, List[str]]) -> Dict[str, dict]:
    """Train the unfinished variants, `args.parallel` at a time, then score each."""
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    pending = [v for v in variants if not (args.run_root / v / SCORES).exists()]
    running: Dict[str, subprocess.Popen] = {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            run_dir = args.run_root / name
            command = train_command(args.experiment, run_dir, args.epochs, variants[name])
            run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run_dir / "ablation.log", "a")
            print(f"{time.strftime('%H:%M:%S')} training {name}", flush=True)
            running[name] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        time.sleep(2)
        for name, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode != 0:
                for other in running.values():
                    other.terminate()  # SIGTERM: each saves a checkpoint to resume from
                    other.wait()
                log = args.run_root / name / "ablation.log"
                sys.exit(f"{name} failed (exit {proc.returncode}): see {log}")
            scores = scores_of(args.run_root / name, variants[name], args.beam)
            (args.run_root / name / SCORES).write_text(json.dumps(scores, indent=2))
            print(f"{time.strftime('%H:%M:%S')} {name}: {json.dumps(scores)}", flush=True)
    return {v: json.loads((args.run_root / v / SCORES).read_text()) for v in variants}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-root", type=Path, required=True, help="one run folder per variant")
    parser.add_argument("--experiment", default="cpu_small")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (cores split)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--label", help="names the file: ablations_<experiment>_LABEL.json")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 variants, no file")
    args = parser.parse_args()
    if args.parallel < 1 or args.epochs < 1:
        parser.error("--parallel and --epochs must be at least 1")
    variants = {v: VARIANTS[v] for v in args.variants}
    if args.smoke:
        args.experiment, args.epochs, args.beam = "smoke", 2, 2
        smoke = ["trainer.max_steps=6", "trainer.val_every_steps=3", "data.max_train_examples=300"]
        variants = {v: [*smoke, *VARIANTS[v]] for v in ("baseline", "word_dropout_0.1")}

    started = time.monotonic()
    results = run_variants(args, variants)
    label = f"_{args.label}" if args.label else ""
    report = {
        "experiment": args.experiment,
        "epochs": args.epochs,
        "commands": {
            v: " ".join(
                ["python", *train_command(args.experiment, Path("RUN"), args.epochs, o)[1:]]
            )
            for v, o in variants.items()
        },
        "variants": results,
        "wall_seconds": round(time.monotonic() - started, 1),
        "parallel": args.parallel,
        "machine": machine(),
    }
    out = write_result(f"ablations_{args.experiment}{label}", report, smoke=args.smoke)
    if out:
        print(f"written to {out}")


if __name__ == "__main__":
    main()
