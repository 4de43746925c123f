"""`dist-lstm evaluate`: translate a split of the run's data (or --src) and print
sacreBLEU's BLEU and chrF with their signatures, or a JSON report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dist_lstm.evaluation import sacrebleu_scores
from dist_lstm.translate.commands.options import (
    add_search_arguments,
    sources_and_references,
    translator,
)


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="translate and score with sacreBLEU",
        description="Translate a source file and print sacreBLEU "
        "BLEU and chrF with their signatures.",
    )
    add_search_arguments(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--split", choices=("test", "valid"), help="the run's own dataset split (from its config)"
    )
    which.add_argument("--src", help="source file (with --ref)")
    parser.add_argument("--ref", help="reference translations, line-aligned with --src")
    parser.add_argument("--output", help="also write the hypotheses to this file")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = translator(args)
    src_path, sources, ref_path, references = sources_and_references(args, model.loaded)
    hypotheses = model.translate(sources)
    if args.output:
        Path(args.output).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    scores = sacrebleu_scores(hypotheses, references)
    report = {
        **scores,
        "sentences": len(hypotheses),
        "beam": args.beam,
        "alpha": args.alpha,
        "precision": args.precision,
        "checkpoint": str(model.loaded.path),
        "checkpoints": [str(path) for path in model.loaded.paths],  # an ensemble's all
        "source": str(src_path),
        "reference": str(ref_path),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"BLEU = {scores['bleu']:.2f}  {scores['bleu_signature']}")
        print(f"chrF = {scores['chrf']:.2f}  {scores['chrf_signature']}")
    return 0
