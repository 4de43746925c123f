"""`dist-lstm export`: any checkpoint (single, DDP, DeepSpeed ZeRO 1-3; a run directory
means its best, as for translate) as one file of full fp32 weights with the model
config and tokenizer."""

from __future__ import annotations

import argparse
import logging

from dist_lstm.checkpoint import load_checkpoint, write_atomically
from dist_lstm.translate.inference import resolve_checkpoint_path

log = logging.getLogger(__name__)


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="consolidate a checkpoint into one file",
        description="Write any checkpoint (single, DDP, DeepSpeed ZeRO 1-3; a run directory "
        "means its best) as one file: full fp32 weights, model config and tokenizer, "
        "loadable with torch.load(..., weights_only=True).",
    )
    parser.add_argument("checkpoint", help="a checkpoint folder, file, or run directory")
    parser.add_argument("output", help="the file to write, e.g. model.pt")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = resolve_checkpoint_path(args.checkpoint)
    payload = load_checkpoint(source)
    payload.pop("world_size", None)
    payload["exported_from"] = str(source)
    out = write_atomically(payload, args.output)
    log.info("exported %s (step %s) to %s", source, payload.get("step"), out)
    return 0
