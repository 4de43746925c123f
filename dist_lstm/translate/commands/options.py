"""The arguments every decoding command shares (checkpoints, search, device, precision)
and what they become: the loaded model and its SearchOptions, and the held-out lines a
command scores. translate, evaluate, tune-search and serve take them from here, each
with its own defaults where it differs (serve's batch size, tune-search's grid)."""

from __future__ import annotations

import argparse
from typing import List, Tuple

import torch

from dist_lstm.config.choices import DEVICES, PRECISIONS
from dist_lstm.data.corpus import read_lines
from dist_lstm.errors import UserError
from dist_lstm.topology import resolve_device
from dist_lstm.translate.inference import (
    MAX_BEAM,
    LoadedModel,
    SearchOptions,
    Translator,
    dataset_split_files,
    load_models,
    run_output_limit,
)

ENSEMBLE_HELP = (
    "a checkpoint folder or file, or a run directory (uses checkpoints/best); give it "
    "several times to decode with an ensemble of the models (their log-probabilities "
    "averaged at every step)"
)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: use 1 or more")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{value} is invalid: use 0 or more")
    return value


def add_search_arguments(
    parser: argparse.ArgumentParser,
    *,
    checkpoint_help: str = ENSEMBLE_HELP,
    one_search: bool = True,
    batch_size: int = 64,
    output_limit: bool = True,
) -> None:
    """The checkpoint, search, device and precision options. `one_search`: also --beam
    and --alpha (a grid command has its own lists); `output_limit`: also --max-len-a/b
    (defaulting to the run's; a server of several runs keeps search's own)."""
    parser.add_argument("--checkpoint", required=True, action="append", help=checkpoint_help)
    if one_search:
        parser.add_argument(
            "--beam",
            type=positive_int,
            default=5,
            help=f"beam size; 1 is greedy, at most {MAX_BEAM} (default 5)",
        )
        parser.add_argument(
            "--alpha",
            type=non_negative_float,
            default=0.0,
            help="GNMT length penalty; 0 disables it (default 0)",
        )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=batch_size,
        help=f"sentences decoded together (default {batch_size})",
    )
    if output_limit:
        parser.add_argument(
            "--max-len-a",
            type=float,
            help="output limit a*source_len+b (default: the run's trainer.decode_max_len_a)",
        )
        parser.add_argument(
            "--max-len-b", type=int, help="see --max-len-a (default: the run's value)"
        )
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="32, or autocast to bf16 (CPUs with avx512_bf16, most GPUs) or fp16 (GPUs): "
        "faster products, scores in fp32; outputs may differ slightly from 32 (default 32)",
    )


def device(args: argparse.Namespace) -> torch.device:
    """--device as a torch device, refused in one line where CUDA is asked for but absent."""
    return resolve_device(args.device, option="--device ")


def model_and_options(args: argparse.Namespace) -> Tuple[LoadedModel, SearchOptions]:
    loaded = load_models(args.checkpoint, device(args))
    run_a, run_b = run_output_limit(loaded)
    options = SearchOptions(
        beam=args.beam,
        alpha=args.alpha,
        batch_size=args.batch_size,
        precision=args.precision,
        max_len_a=args.max_len_a if args.max_len_a is not None else run_a,
        max_len_b=args.max_len_b if args.max_len_b is not None else run_b,
    )
    options.validate()
    return loaded, options


def translator(args: argparse.Namespace) -> Translator:
    return Translator(*model_and_options(args))


def sources_and_references(
    args: argparse.Namespace, loaded: LoadedModel
) -> Tuple[str, List[str], str, List[str]]:
    """--split of the run's data, or --src/--ref: both paths and their aligned lines."""
    if args.split:
        src_path, ref_path = dataset_split_files(loaded.data_config, args.split)
    else:
        src_path, ref_path = args.src, args.ref
    sources, references = read_lines(src_path), read_lines(ref_path)
    if len(sources) != len(references):
        raise UserError(
            f"{src_path} has {len(sources)} lines but {ref_path} has "
            f"{len(references)}; source and reference must be line-aligned."
        )
    return src_path, sources, ref_path, references
