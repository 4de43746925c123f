"""What decoding choices add to a trained run, each scored on the test split:

    python benchmarks/decode_choices.py --run-dir /work/runs/de_en     # after quality.py

1. beam size and length penalty chosen on the validation split (`dist-lstm tune-search`),
   then test BLEU with that choice;
2. checkpoint averaging: the parameter mean of the last N validation checkpoints, and of
   the N up to the best one (after an early stop the last N all come after the peak);
3. ensembles: the best checkpoint with the last ones, log-probabilities averaged per step.
Writes benchmarks/results/decode_choices_<experiment>.json (committed) with the commands
that reproduce each figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dist_lstm.checkpoint import write_atomically  # noqa: E402
from dist_lstm.checkpoint.average import average_checkpoints, last_step_checkpoints  # noqa: E402
from dist_lstm.checkpoint.manager import CheckpointManager  # noqa: E402
from dist_lstm.data.corpus import read_lines  # noqa: E402
from dist_lstm.evaluation import sacrebleu_scores  # noqa: E402
from dist_lstm.inference import (  # noqa: E402
    SearchOptions,
    Translator,
    dataset_split_files,
    load_models,
    resolve_checkpoint_path,
)
from dist_lstm.tuning import search_grid  # noqa: E402


def score(paths, split: str, beam: int, alpha: float) -> dict:
    loaded = load_models(paths)
    trainer = loaded.config["trainer"]
    options = SearchOptions(
        beam=beam,
        alpha=alpha,
        max_len_a=trainer["decode_max_len_a"],
        max_len_b=trainer["decode_max_len_b"],
    )
    src, ref = dataset_split_files(loaded.data_config, split)
    started = time.monotonic()
    hypotheses = Translator(loaded, options).translate(read_lines(src))
    scores = sacrebleu_scores(hypotheses, read_lines(ref))
    return {
        "bleu": round(scores["bleu"], 2),
        "chrf": round(scores["chrf"], 2),
        "beam": beam,
        "alpha": alpha,
        "decode_seconds": round(time.monotonic() - started, 1),
        "checkpoints": [p.name for p in loaded.paths],
    }


def checkpoints_up_to(run_dir: Path, best: Path, count: int) -> list:
    """`best` and the count-1 complete checkpoints before it, oldest first."""
    every = CheckpointManager(run_dir, keep_last=1, is_main=False).completed()
    upto = [p for p in every if p.resolve().name <= best.resolve().name]  # step_%08d names
    return upto[-count:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True, help="a run kept with all its checkpoints")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    parser.add_argument("--average", type=int, nargs="+", default=[3, 5], help="last N to average")
    parser.add_argument(
        "--average-to-best", type=int, nargs="+", default=[3, 5], help="N up to the best to average"
    )
    parser.add_argument("--ensemble", type=int, default=3, help="best + the last N-1")
    parser.add_argument("--label", help="names the file: decode_choices_<run>_LABEL.json")
    parser.add_argument("--smoke", action="store_true", help="tiny grid, no file")
    args = parser.parse_args()
    if args.smoke:
        args.beams, args.alphas, args.average, args.ensemble = [1, 2], [0.0, 1.0], [2], 2
        args.average_to_best = [2]
    run_dir = Path(args.run_dir)
    best = resolve_checkpoint_path(run_dir)
    loaded = load_models([best])
    trainer = loaded.config["trainer"]
    base = SearchOptions(
        max_len_a=trainer["decode_max_len_a"], max_len_b=trainer["decode_max_len_b"]
    )
    src, ref = dataset_split_files(loaded.data_config, "valid")
    grid = search_grid(loaded, base, read_lines(src), read_lines(ref), args.beams, args.alphas)
    chosen = grid.best
    report = {
        "run_dir": str(run_dir),
        "best_checkpoint": best.name,
        "tune_search_valid": grid.report(),
        "test_greedy": score([best], "test", 1, 0.0),
        "test_beam5": score([best], "test", 5, 0.0),
        "test_with_tuned_search": score([best], "test", chosen.beam, chosen.alpha),
        "averaged": {},
        "ensemble": None,
    }
    groups = {f"last_{n}": last_step_checkpoints(run_dir, n) for n in args.average}
    groups.update(
        {f"to_best_{n}": checkpoints_up_to(run_dir, best, n) for n in args.average_to_best}
    )
    with tempfile.TemporaryDirectory() as scratch:
        for name, paths in groups.items():
            out = write_atomically(average_checkpoints(paths), Path(scratch) / f"{name}.pt")
            report["averaged"][name] = {
                "valid_tuned": score([out], "valid", chosen.beam, chosen.alpha),
                "test_tuned": score([out], "test", chosen.beam, chosen.alpha),
                "averaged": [p.name for p in paths],
            }
    members = [best] + [
        p for p in reversed(last_step_checkpoints(run_dir, args.ensemble)) if p.resolve() != best
    ][: args.ensemble - 1]
    report["ensemble"] = score(members, "test", chosen.beam, chosen.alpha)
    report["command"] = "python benchmarks/decode_choices.py " + " ".join(sys.argv[1:])
    label = f"_{args.label}" if args.label else ""
    write_result(f"decode_choices_{run_dir.name}{label}", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
