"""Which decoding of a trained run to quote, chosen on validation alone, then its test score:

    python benchmarks/decode_choices.py --run-dir /work/runs/de_en     # after quality.py

The candidates, each scored on the validation split:
1. the best checkpoint (by the run's own monitor) with the beam size and length penalty
   that `dist-lstm tune-search` picks on validation;
2. with that search, the parameter mean of the last N checkpoints, and of the N up to the
   best one (after an early stop the last N all come after the peak);
3. with that search, an ensemble of the best checkpoint and the last ones.
SELECTION_RULE (below) picks one of them from the validation scores; only then is the test
split decoded, for the chosen candidate, plus greedy and beam 5 on the best checkpoint as
fixed reference points that choose nothing. Writes
benchmarks/results/decode_choices_<run>.json (committed) with the candidates, the rule
and the choice.

`--apply-rule FILE` applies the rule to a result file written before the rule existed
(from its recorded validation scores) and records the choice in it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dist_lstm.checkpoint import completed_checkpoints, write_atomically  # noqa: E402
from dist_lstm.checkpoint.average import average_checkpoints, last_step_checkpoints  # noqa: E402
from dist_lstm.data.corpus import read_lines  # noqa: E402
from dist_lstm.evaluation import sacrebleu_scores  # noqa: E402
from dist_lstm.translate.inference import (  # noqa: E402
    SearchOptions,
    Translator,
    dataset_split_files,
    load_models,
    resolve_checkpoint_path,
)
from dist_lstm.translate.tuning import search_grid  # noqa: E402

SELECTION_RULE = (
    "Fixed on 2026-12-06 and applied by benchmarks/decode_choices.py:choose from "
    "validation scores only. Every candidate decodes with the beam size and length penalty "
    "that tune-search chose on the validation split for the best checkpoint. The candidate "
    "with the highest validation BLEU rounded to two decimals is chosen; a tie goes to the "
    "cheaper decoding: a single checkpoint, then an average (fewer checkpoints first), then "
    "an ensemble (fewer members first), then the order listed. A candidate without a "
    "validation score is not eligible. Only the chosen candidate's test score is quoted."
)
KIND_COST = {"single": 0, "average": 1, "ensemble": 2}  # decoding cost order for ties


def choose(candidates: List[Dict[str, Any]]) -> Dict[str, Any]:
    """SELECTION_RULE: the highest validation BLEU at two decimals, ties to the cheapest.
    Differences below a hundredth are not differences, so they never outrank cost."""
    eligible = [(index, c) for index, c in enumerate(candidates) if c.get("valid_bleu") is not None]
    if not eligible:
        raise ValueError("no candidate has a validation score: nothing can be chosen")
    _, best = min(
        eligible,
        key=lambda item: (
            -round(item[1]["valid_bleu"], 2),
            KIND_COST[item[1]["kind"]],
            len(item[1]["checkpoints"]),
            item[0],
        ),
    )
    return best


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
    every = completed_checkpoints(run_dir)
    upto = [p for p in every if p.resolve().name <= best.resolve().name]  # step_%08d names
    return upto[-count:]


def candidate(name: str, kind: str, checkpoints: List[str], valid: Optional[dict]) -> dict:
    return {
        "name": name,
        "kind": kind,
        "checkpoints": checkpoints,
        "valid_bleu": None if valid is None else valid["bleu"],
        "valid_chrf": None if valid is None else valid["chrf"],
    }


def decode_and_choose(args: argparse.Namespace) -> dict:
    """Score every candidate on validation, choose by the rule, then decode test once."""
    run_dir = Path(args.run_dir)
    best = resolve_checkpoint_path(run_dir)
    loaded = load_models([best])
    trainer = loaded.config["trainer"]
    base = SearchOptions(
        max_len_a=trainer["decode_max_len_a"], max_len_b=trainer["decode_max_len_b"]
    )
    src, ref = dataset_split_files(loaded.data_config, "valid")
    grid = search_grid(loaded, base, read_lines(src), read_lines(ref), args.beams, args.alphas)
    beam, alpha = grid.best.beam, grid.best.alpha
    tuned = {"bleu": grid.best.bleu, "chrf": grid.best.chrf}
    candidates = [candidate("best_checkpoint", "single", [best.resolve().name], tuned)]
    groups = {f"last_{n}": last_step_checkpoints(run_dir, n) for n in args.average}
    groups.update(
        {f"to_best_{n}": checkpoints_up_to(run_dir, best, n) for n in args.average_to_best}
    )
    members = [best] + [
        p for p in reversed(last_step_checkpoints(run_dir, args.ensemble)) if p.resolve() != best
    ][: args.ensemble - 1]
    with tempfile.TemporaryDirectory() as scratch:
        decodable = {"best_checkpoint": [best]}
        for name, paths in groups.items():
            out = write_atomically(average_checkpoints(paths), Path(scratch) / f"{name}.pt")
            decodable[name] = [out]
            names = [p.resolve().name for p in paths]
            valid = score([out], "valid", beam, alpha)
            candidates.append(candidate(name, "average", names, valid))
        ensemble_name = f"ensemble_{len(members)}"
        decodable[ensemble_name] = members
        valid = score(members, "valid", beam, alpha)
        names = [p.resolve().name for p in members]
        candidates.append(candidate(ensemble_name, "ensemble", names, valid))
        chosen = choose(candidates)
        test = score(decodable[chosen["name"]], "test", beam, alpha)
    return {
        "run_dir": str(run_dir),
        "best_checkpoint": best.resolve().name,
        "tune_search_valid": grid.report(),
        "rule": SELECTION_RULE,
        "search": {"beam": beam, "alpha": alpha},
        "candidates": candidates,
        "chosen": {**chosen, "beam": beam, "alpha": alpha, "test": test},
        "reference_points_not_used_for_any_choice": {
            "test_greedy": score([best], "test", 1, 0.0),
            "test_beam5": score([best], "test", 5, 0.0),
        },
    }


def candidates_of_old_report(report: dict) -> List[Dict[str, Any]]:
    """The candidates of a result file written before SELECTION_RULE, from its recorded
    validation scores (its ensemble was scored on test only, so it is not eligible)."""
    best = report["tune_search_valid"]["best"]
    single = report["test_with_tuned_search"]["checkpoints"]
    found = [candidate("best_checkpoint", "single", single, best)]
    for name, entry in report["averaged"].items():
        found.append(candidate(name, "average", entry["averaged"], entry["valid_tuned"]))
    if report.get("ensemble"):
        members = report["ensemble"]["checkpoints"]
        found.append(candidate(f"ensemble_{len(members)}", "ensemble", members, None))
    return found


def test_score_of_old_report(report: dict, name: str) -> dict:
    if name == "best_checkpoint":
        return report["test_with_tuned_search"]
    return report["averaged"][name]["test_tuned"]


def apply_rule_to_file(path: Path) -> dict:
    """Record in an older result file which candidate the rule chooses and its test score.
    Its other test scores stay in the file, labelled as choosing nothing."""
    report = json.loads(path.read_text())
    candidates = candidates_of_old_report(report)
    chosen = choose(candidates)
    search = report["tune_search_valid"]["best"]
    report["rule"] = SELECTION_RULE
    report["candidates"] = candidates
    report["chosen"] = {
        **chosen,
        "beam": search["beam"],
        "alpha": search["alpha"],
        "test": test_score_of_old_report(report, chosen["name"]),
        "applied": "2026-12-06 with --apply-rule, to the validation scores this file "
        "recorded; the test scores of the other candidates below were decoded before the "
        "rule was written and are not used for any choice",
    }
    report["test_scores_not_used_for_any_choice"] = [
        key
        for key in ("test_greedy", "test_beam5", "test_with_tuned_search", "ensemble")
        if not (key == "test_with_tuned_search" and chosen["name"] == "best_checkpoint")
    ] + [f"averaged.{n}.test_tuned" for n in report["averaged"] if n != chosen["name"]]
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report["chosen"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--run-dir", help="a run kept with all its checkpoints")
    target.add_argument(
        "--apply-rule", type=Path, metavar="FILE", help="choose in an older result file"
    )
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
    return args


def main() -> None:
    args = parse_args()
    if args.apply_rule:
        print(json.dumps(apply_rule_to_file(args.apply_rule), indent=2))
        return
    report = decode_and_choose(args)
    report["command"] = "python benchmarks/decode_choices.py " + " ".join(sys.argv[1:])
    label = f"_{args.label}" if args.label else ""
    write_result(f"decode_choices_{Path(args.run_dir).name}{label}", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
