"""`dist-lstm` command line: prepare a corpus; translate, evaluate, tune, serve, average and
export trained checkpoints.

    dist-lstm prepare data=custom data.train_src=train.de data.train_tgt=train.en ...
    dist-lstm translate --checkpoint outputs/RUN/checkpoints/best < input.de > output.en
    dist-lstm evaluate --checkpoint outputs/RUN --split test --beam 5
    dist-lstm evaluate --checkpoint RUN_A --checkpoint RUN_B --split test   # an ensemble
    dist-lstm tune-search --checkpoint outputs/RUN --beams 1 5 10 --alphas 0 0.5 1
    dist-lstm average --run outputs/RUN --last 3 --output averaged.pt
    dist-lstm export outputs/RUN/checkpoints/last model.pt
    dist-lstm serve --checkpoint outputs/RUN --port 8080      # web page and JSON API

`python -m dist_lstm ...` is the same program. Training is `python train.py` (Hydra).

This module is the command tree and the dispatch under the exit policy; each command's
arguments and work are its own module's: dist_lstm/jobs/prepare.py, and
dist_lstm/translate/commands/ for the commands on trained models.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from dist_lstm.exit_policy import exit_status_for
from dist_lstm.jobs import prepare
from dist_lstm.translate.commands import average, evaluate, export, serve, translate, tune_search

COMMANDS = (prepare, translate, evaluate, tune_search, serve, average, export)  # help's order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dist-lstm",
        description="Use trained dist-lstm models. Train with `python train.py`.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_command(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("evaluate", "tune-search") and getattr(args, "src", None):
        if not args.ref:
            parser.error(f"{args.command}: --src needs --ref")
        args.split = None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except Exception as exc:
        status = exit_status_for(exc, say=lambda line: _say_error(args.command, line))
        if status is None:
            raise
        return status


def _say_error(command: str, line: str) -> None:
    print(f"dist-lstm {command}: error: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
