"""Train an experiment end to end and record its test BLEU/chrF and wall-clock time.

    python benchmarks/quality.py                       # experiment=cpu_small
    python benchmarks/quality.py --smoke               # quick check of the script, no file
    python benchmarks/quality.py -- trainer.max_time=00:10:00   # extra overrides
    python benchmarks/quality.py --label bf16 -- strategy.precision=bf16   # quality_cpu_small_bf16

Writes benchmarks/results/quality_<experiment>[_<label>].json (committed) with the figures, the
machine they were measured on and the exact command, so a reader can reproduce them.
Time to quality: every validation's checkpoint is kept and scored on the test split
(greedy) afterwards; the first to reach --bleu-target gives the training time it took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def test_scores(checkpoint: Path, beam: int) -> dict:
    """Test-split BLEU/chrF of `checkpoint` (a run directory means its best) with `beam`."""
    from dist_lstm.data.corpus import read_lines
    from dist_lstm.evaluation import sacrebleu_scores
    from dist_lstm.translate.inference import (
        SearchOptions,
        Translator,
        dataset_split_files,
        load_model,
    )

    loaded = load_model(checkpoint)
    trainer = loaded.config["trainer"]
    options = SearchOptions(
        beam=beam, max_len_a=trainer["decode_max_len_a"], max_len_b=trainer["decode_max_len_b"]
    )
    src, ref = dataset_split_files(loaded.data_config, "test")
    started = time.monotonic()
    hypotheses = Translator(loaded, options).translate(read_lines(src))
    seconds = time.monotonic() - started
    scores = sacrebleu_scores(hypotheses, read_lines(ref))
    return {
        "bleu": round(scores["bleu"], 2),
        "chrf": round(scores["chrf"], 2),
        "bleu_signature": scores["bleu_signature"],
        "decode_seconds": round(seconds, 1),
    }


def read_run_metrics(run_dir: Path) -> tuple:
    """(validation records, the best of them, the final test record, training logs)
    from a finished run's metrics.jsonl."""
    records = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    validations = [r for r in records if "val_bleu" in r]
    best = max(validations, key=lambda r: r["val_bleu"])
    test = next(r for r in reversed(records) if "test_bleu" in r)
    return validations, best, test, [r for r in records if "loss" in r]


def time_to_bleu(run_dir: Path, validations: list, target: float) -> dict:
    """The first validation checkpoint whose greedy test BLEU reaches `target`."""
    from dist_lstm.checkpoint import CheckpointManager

    checkpoints = CheckpointManager(run_dir, keep_last=len(validations))
    scored = []
    for record in validations:
        folder = checkpoints.at_step(record["step"])
        if folder is None:
            continue
        bleu = test_scores(folder, beam=1)["bleu"]
        scored.append({"step": record["step"], "train_seconds": record["elapsed_s"], "bleu": bleu})
        if bleu >= target:
            return {"target_bleu": target, "reached": True, **scored[-1], "checked": scored}
    return {"target_bleu": target, "reached": False, "checked": scored}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="cpu_small")
    parser.add_argument("--run-dir", help="keep the run here (default: a temporary folder)")
    parser.add_argument("--beam", type=int, default=5, help="beam size of the second test score")
    parser.add_argument(
        "--bleu-target", type=float, default=30.0, help="test BLEU of the time-to-quality figure"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, 20 steps, no file")
    parser.add_argument(
        "--label", help="names the result file: quality_<experiment>_LABEL.json (with overrides)"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    if args.smoke:
        args.experiment, args.bleu_target = "smoke", 0.0
        args.overrides = [
            "trainer.max_steps=20",
            "trainer.val_every_steps=10",
            "data.max_train_examples=500",
            *args.overrides,
        ]

    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix=f"quality-{args.experiment}-"))
    command = [
        sys.executable,
        "train.py",
        f"experiment={args.experiment}",
        f"hydra.run.dir={run_dir}",
        "trainer.progress_bar=false",
        "checkpoint.keep_last=1000",  # every validation's checkpoint, for time to quality
        *args.overrides,
    ]
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.monotonic() - started

    beam = test_scores(run_dir, args.beam)
    validations, best, test, train_logs = read_run_metrics(run_dir)
    result = {
        "experiment": args.experiment,
        "command": " ".join(["python", "train.py", *command[2:3], *args.overrides]),
        f"test_beam{args.beam}": beam,
        "test_greedy": {
            "bleu": round(test["test_bleu"], 2),
            "chrf": round(test["test_chrf"], 2),
            "decoding": "greedy",
            "checkpoint_step": test["test_step"],
        },
        "best_validation": {
            "step": best["step"],
            "bleu": round(best["val_bleu"], 2),
            "loss": round(best["val_loss"], 4),
        },
        "validations": [
            {"step": v["step"], "epoch": v["epoch"], "val_bleu": round(v["val_bleu"], 2)}
            for v in validations
        ],  # every validation, so a claim about any of them has a file behind it
        "time_to_bleu": time_to_bleu(run_dir, validations, args.bleu_target),
        "steps": train_logs[-1]["step"],
        "epochs_completed": validations[-1]["epoch"],
        "train_seconds": round(train_logs[-1]["elapsed_s"], 1),
        "wall_seconds_total": round(wall, 1),
        "median_train_tokens_per_sec": round(
            sorted(r["tokens_per_sec"] for r in train_logs)[len(train_logs) // 2]
        ),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.smoke:
        print(json.dumps(result, indent=2))
        return
    RESULTS.mkdir(exist_ok=True)
    label = f"_{args.label}" if args.label else ""
    out = RESULTS / f"quality_{args.experiment}{label}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
