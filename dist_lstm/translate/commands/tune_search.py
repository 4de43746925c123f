"""`dist-lstm tune-search`: every beam size and length penalty of a grid on held-out data
(never the test split), scored with sacreBLEU; the table and the best options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dist_lstm.errors import UserError
from dist_lstm.translate.commands.options import (
    add_search_arguments,
    model_and_options,
    non_negative_float,
    positive_int,
    sources_and_references,
)
from dist_lstm.translate.tuning import search_grid


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "tune-search",
        help="choose beam size and length penalty on held-out data",
        description="Translate held-out data (the run's validation split by default) with "
        "every beam size and length penalty of a grid, score each with sacreBLEU and print "
        "the BLEU table and the best options, for `translate`/`evaluate --beam B --alpha A`.",
    )
    add_search_arguments(parser, one_search=False)
    parser.add_argument(
        "--beams",
        type=positive_int,
        nargs="+",
        default=[1, 5, 10],
        help="beam sizes to try (default 1 5 10)",
    )
    parser.add_argument(
        "--alphas",
        type=non_negative_float,
        nargs="+",
        default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        help="length penalties to try with each beam above 1 (default 0 0.2 ... 1.0)",
    )
    held_out = parser.add_mutually_exclusive_group()
    held_out.add_argument(
        "--split",
        choices=("valid", "test"),
        default="valid",
        help="the run's split (default valid; test is refused: it must stay unseen)",
    )
    held_out.add_argument("--src", help="source file (with --ref) instead of a split")
    parser.add_argument("--ref", help="reference translations, line-aligned with --src")
    parser.add_argument("--output", help="also write the JSON report to this file")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    # the grid's base options: every cell sets its own beam and alpha
    parser.set_defaults(func=run, beam=1, alpha=0.0)


def run(args: argparse.Namespace) -> int:
    if args.split == "test":
        # options chosen on the test split make every later test score meaningless
        raise UserError(
            "tune-search chooses search options, and choosing them on the test split would "
            "leave no unseen data to score them on: use --split valid (the default), or "
            "--src/--ref with another held-out set."
        )
    loaded, base = model_and_options(args)
    src_path, sources, ref_path, references = sources_and_references(args, loaded)
    result = search_grid(loaded, base, sources, references, args.beams, args.alphas)
    best = result.best
    report = {
        **result.report(),
        "sentences": len(sources),
        "checkpoints": [str(path) for path in loaded.paths],
        "source": str(src_path),
        "reference": str(ref_path),
    }
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"BLEU on {src_path} ({len(sources)} sentences), {result.bleu_signature}")
    print(result.table())
    print(
        f"best: --beam {best.beam} --alpha {best.alpha:g} "
        f"(BLEU {best.bleu:.2f}, chrF {best.chrf:.2f})"
    )
    return 0
