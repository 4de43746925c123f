"""`dist-lstm average`: the element-wise mean of several checkpoints of one model (given,
or a run's newest), written as one checkpoint translate and evaluate accept. The
averaging itself is dist_lstm/checkpoint/average.py's."""

from __future__ import annotations

import argparse
import logging

from dist_lstm.checkpoint import write_atomically
from dist_lstm.checkpoint.average import average_checkpoints, last_step_checkpoints
from dist_lstm.translate.commands.options import positive_int

log = logging.getLogger(__name__)


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "average",
        help="average the parameters of checkpoints",
        description="Average model parameters of several checkpoints "
        "of the same model into one checkpoint.",
    )
    sources = parser.add_mutually_exclusive_group(required=True)
    sources.add_argument("--checkpoints", nargs="+", help="checkpoints (folders or files)")
    sources.add_argument("--run", help="a run directory: average its last --last step checkpoints")
    parser.add_argument(
        "--last",
        type=positive_int,
        default=3,
        help="with --run: how many of the newest checkpoints (default 3)",
    )
    parser.add_argument("--output", required=True, help="the averaged checkpoint file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = args.checkpoints or last_step_checkpoints(args.run, args.last)
    payload = average_checkpoints(paths)
    out = write_atomically(payload, args.output)
    log.info("averaged %d checkpoints into %s", len(paths), out)
    return 0
