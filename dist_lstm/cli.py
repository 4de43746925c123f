"""`dist-lstm` command line: prepare a corpus; translate, evaluate, average and export
trained checkpoints.

    dist-lstm prepare data=custom data.train_src=train.de data.train_tgt=train.en ...
    dist-lstm translate --checkpoint outputs/RUN/checkpoints/best < input.de > output.en
    dist-lstm evaluate --checkpoint outputs/RUN --split test --beam 5
    dist-lstm evaluate --checkpoint RUN_A --checkpoint RUN_B --split test   # an ensemble
    dist-lstm tune-search --checkpoint outputs/RUN --beams 1 5 10 --alphas 0 0.5 1
    dist-lstm average --run outputs/RUN --last 3 --output averaged.pt
    dist-lstm export outputs/RUN/checkpoints/last model.pt
    dist-lstm serve --checkpoint outputs/RUN --port 8080      # web page and JSON API

`python -m dist_lstm ...` is the same program. Training is `python train.py` (Hydra).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Iterator, List, Optional, Sequence, Tuple

import torch

from dist_lstm.checkpoint import load_checkpoint, write_atomically
from dist_lstm.checkpoint.average import average_checkpoints, last_step_checkpoints
from dist_lstm.data.corpus import read_lines
from dist_lstm.errors import UserError
from dist_lstm.evaluation import sacrebleu_scores
from dist_lstm.exit_policy import exit_status_for
from dist_lstm.precision import PRECISIONS
from dist_lstm.translate.inference import (
    MAX_BEAM,
    LoadedModel,
    SearchOptions,
    Translator,
    check_beam,
    dataset_split_files,
    load_models,
    resolve_checkpoint_path,
)
from dist_lstm.translate.tuning import search_grid

log = logging.getLogger("dist_lstm")

STREAM_CHUNK = 2048  # lines translated together when input is not interactive


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: use 1 or more")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{value} is invalid: use 0 or more")
    return value


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine; use --device cpu.")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _add_search_args(parser: argparse.ArgumentParser, one_search: bool = True) -> None:
    """The checkpoint and search options; `one_search`: also --beam and --alpha (a grid
    command has its own lists)."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="a checkpoint folder or file, or a run directory (uses checkpoints/best); "
        "give it several times to decode with an ensemble of the models (their "
        "log-probabilities averaged at every step)",
    )
    if one_search:
        parser.add_argument(
            "--beam",
            type=_positive_int,
            default=5,
            help=f"beam size; 1 is greedy, at most {MAX_BEAM} (default 5)",
        )
        parser.add_argument(
            "--alpha",
            type=_non_negative_float,
            default=0.0,
            help="GNMT length penalty; 0 disables it (default 0)",
        )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="sentences decoded together (default 64)",
    )
    parser.add_argument(
        "--max-len-a",
        type=float,
        help="output limit a*source_len+b (default: the run's trainer.decode_max_len_a)",
    )
    parser.add_argument("--max-len-b", type=int, help="see --max-len-a (default: the run's value)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="32, or autocast to bf16 (CPUs with avx512_bf16, most GPUs) or fp16 (GPUs): "
        "faster products, scores in fp32; outputs may differ slightly from 32 (default 32)",
    )


def _model_and_options(args: argparse.Namespace) -> Tuple[LoadedModel, SearchOptions]:
    loaded = load_models(args.checkpoint, _device(args.device))
    trainer = loaded.config.get("trainer", {})
    options = SearchOptions(
        beam=args.beam,
        alpha=args.alpha,
        batch_size=args.batch_size,
        precision=args.precision,
        max_len_a=(
            args.max_len_a if args.max_len_a is not None else trainer.get("decode_max_len_a", 1.5)
        ),
        max_len_b=(
            args.max_len_b if args.max_len_b is not None else trainer.get("decode_max_len_b", 10)
        ),
    )
    options.validate()
    return loaded, options


def _translator(args: argparse.Namespace) -> Translator:
    return Translator(*_model_and_options(args))


def _sources_and_references(
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


# ----------------------------------------------------------------------- translate
def _lines_of(stream: IO[bytes], name: str) -> Iterator[bytes]:
    """The stream's lines; a damaged gzip file is named instead of raising a traceback."""
    try:
        yield from stream
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {name}: {exc}. Is it a complete gzip file?") from None


def read_text_lines(stream: IO[bytes], name: str, chunk: int) -> Iterator[Tuple[int, List[str]]]:
    """(first line number, lines) chunks of a byte stream; invalid UTF-8 names its line."""
    lines: List[str] = []
    first = 1
    for number, raw in enumerate(_lines_of(stream, name), start=1):
        try:
            lines.append(raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{name} line {number} is not valid UTF-8 ({exc.reason} at byte {exc.start}). "
                "Re-encode the input as UTF-8, e.g. with `iconv -t UTF-8`."
            ) from None
        if len(lines) == chunk:
            yield first, lines
            first, lines = number + 1, []
    if lines:
        yield first, lines


def cmd_translate(args: argparse.Namespace) -> int:
    translator = _translator(args)
    with ExitStack() as stack:
        if args.input:
            if not Path(args.input).is_file():
                raise UserError(f"--input {args.input}: no such file.")
            # gzip by name, as the training data's paths are read (the shipped splits are .gz)
            opener = gzip.open if args.input.endswith(".gz") else open
            source, name = stack.enter_context(opener(args.input, "rb")), args.input
        else:
            source, name = sys.stdin.buffer, "<stdin>"
        out = (
            stack.enter_context(open(args.output, "w", encoding="utf-8"))
            if args.output
            else sys.stdout
        )
        # At a terminal, answer each line as it is typed; otherwise batch for speed.
        chunk = 1 if source.isatty() else STREAM_CHUNK
        for first, lines in read_text_lines(source, name, chunk):
            if args.alignments or args.attention_plot:
                _write_with_attention(translator, lines, first, out, args)
            else:
                for translation in translator.translate(lines, first_line=first):
                    out.write(translation + "\n")
            out.flush()
    return 0


def _write_with_attention(
    translator: Translator, lines: List[str], first: int, out: IO[str], args: argparse.Namespace
) -> None:
    """Translations with a tab and their word alignment (--alignments), and heatmaps of
    the first --plot-lines lines (--attention-plot DIR)."""
    from dist_lstm.translate.attention_plot import (
        save_attention_heatmap,  # matplotlib: only when used
    )

    for number, item in enumerate(
        translator.translate_detailed(lines, with_attention=True, first_line=first), start=first
    ):
        out.write(item.translation + (f"\t{item.alignment}" if args.alignments else "") + "\n")
        if args.attention_plot and number <= args.plot_lines and item.target_pieces:
            save_attention_heatmap(
                Path(args.attention_plot) / f"line_{number:05d}.png",
                item.attention,
                item.source_pieces,
                item.target_pieces,
                title=f"line {number}",
            )


# ------------------------------------------------------------------------ evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    translator = _translator(args)
    src_path, sources, ref_path, references = _sources_and_references(args, translator.loaded)
    hypotheses = translator.translate(sources)
    if args.output:
        Path(args.output).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    scores = sacrebleu_scores(hypotheses, references)
    report = {
        **scores,
        "sentences": len(hypotheses),
        "beam": args.beam,
        "alpha": args.alpha,
        "precision": args.precision,
        "checkpoint": str(translator.loaded.path),
        "checkpoints": [str(path) for path in translator.loaded.paths],  # an ensemble's all
        "source": str(src_path),
        "reference": str(ref_path),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"BLEU = {scores['bleu']:.2f}  {scores['bleu_signature']}")
        print(f"chrF = {scores['chrf']:.2f}  {scores['chrf_signature']}")
    return 0


# --------------------------------------------------------------------- tune-search
def cmd_tune_search(args: argparse.Namespace) -> int:
    if args.split == "test":
        # options chosen on the test split make every later test score meaningless
        raise UserError(
            "tune-search chooses search options, and choosing them on the test split would "
            "leave no unseen data to score them on: use --split valid (the default), or "
            "--src/--ref with another held-out set."
        )
    loaded, base = _model_and_options(args)
    src_path, sources, ref_path, references = _sources_and_references(args, loaded)
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


# --------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dist_lstm.translate.serve import ServeLimits, TranslationService, create_app

    options = SearchOptions(
        beam=args.beam, alpha=args.alpha, batch_size=args.batch_size, precision=args.precision
    )
    options.validate()
    check_beam(args.max_beam, "--max-beam")  # a request may ask for it: refuse at start-up
    limits = ServeLimits(
        max_chars=args.max_chars,
        max_texts=args.max_texts,
        max_beam=max(args.max_beam, args.beam),
        queue_size=args.queue_size,
        batch_texts=args.batch_size,
    )
    service = TranslationService(args.checkpoint, options, _device(args.device))
    _check_port_free(args.host, args.port)
    log.info("serving %s on http://%s:%d", ", ".join(service.names), args.host, args.port)
    uvicorn.run(create_app(service, limits), host=args.host, port=args.port, log_level="warning")
    return 0


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port, or "
                "stop what is using it."
            ) from None


# ------------------------------------------------------------------------- average
def cmd_average(args: argparse.Namespace) -> int:
    paths = args.checkpoints or last_step_checkpoints(args.run, args.last)
    payload = average_checkpoints(paths)
    out = write_atomically(payload, args.output)
    log.info("averaged %d checkpoints into %s", len(paths), out)
    return 0


# -------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    source = resolve_checkpoint_path(args.checkpoint)
    payload = load_checkpoint(source)
    payload.pop("world_size", None)
    payload["exported_from"] = str(source)
    out = write_atomically(payload, args.output)
    log.info("exported %s (step %s) to %s", source, payload.get("step"), out)
    return 0


# ------------------------------------------------------------------------- prepare
def cmd_prepare(args: argparse.Namespace) -> int:
    from dist_lstm.config import validate_config
    from dist_lstm.config.compose import compose_config
    from dist_lstm.data.build import verify_inputs
    from dist_lstm.data.prepared import ensure_prepared

    cfg = compose_config(args.overrides)
    validate_config(cfg)
    verify_inputs(cfg.data)
    directory = ensure_prepared(cfg.data, prepares=True, wait_s=0, force=args.force)
    manifest = json.loads((directory / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    tokens = train["src_tokens"] + train["tgt_tokens"]
    data_bytes = sum(size for name, size in manifest["files"].items() if name.startswith("train"))
    print(
        f"{directory}: {train['pairs']:,} training pairs ({train['read']:,} read), "
        f"{tokens:,} tokens, {data_bytes / max(tokens, 1):.2f} bytes per token on disk "
        f"({manifest['dtype']}); `python train.py` with the same overrides uses it."
    )
    return 0


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dist-lstm",
        description="Use trained dist-lstm models. Train with `python train.py`.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare",
        help="tokenize a corpus once into the token files training maps",
        description="Tokenize the corpus the config names (train.py's overrides: data=..., "
        "data.train_src=..., experiment=...) into prepared token files, unless they are "
        "there already. Training does this by itself when they are missing; run it ahead "
        "of a large job.",
    )
    prepare.add_argument("overrides", nargs="*", help="config overrides, as for train.py")
    prepare.add_argument(
        "--force", action="store_true", help="prepare again even if the files are up to date"
    )
    prepare.set_defaults(func=cmd_prepare)

    translate = commands.add_parser(
        "translate",
        help="translate raw text, one sentence per line",
        description="Translate raw sentences (a file, or stdin) "
        "line by line; one output line per input line.",
    )
    _add_search_args(translate)
    translate.add_argument(
        "--input", help="source text file, gzip if it ends in .gz (default: stdin)"
    )
    translate.add_argument("--output", help="where translations go (default: stdout)")
    translate.add_argument(
        "--alignments",
        action="store_true",
        help="after each translation, a tab and its word alignment from the attention, "
        "Pharaoh format: 'i-j' = source word i, output word j (0-based)",
    )
    translate.add_argument(
        "--attention-plot",
        metavar="DIR",
        help="write an attention heatmap (PNG) per sentence into DIR, for the first "
        "--plot-lines lines",
    )
    translate.add_argument(
        "--plot-lines",
        type=_positive_int,
        default=10,
        help="how many lines --attention-plot draws (default 10)",
    )
    translate.set_defaults(func=cmd_translate)

    evaluate = commands.add_parser(
        "evaluate",
        help="translate and score with sacreBLEU",
        description="Translate a source file and print sacreBLEU "
        "BLEU and chrF with their signatures.",
    )
    _add_search_args(evaluate)
    which = evaluate.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--split", choices=("test", "valid"), help="the run's own dataset split (from its config)"
    )
    which.add_argument("--src", help="source file (with --ref)")
    evaluate.add_argument("--ref", help="reference translations, line-aligned with --src")
    evaluate.add_argument("--output", help="also write the hypotheses to this file")
    evaluate.add_argument("--json", action="store_true", help="print machine-readable JSON")
    evaluate.set_defaults(func=cmd_evaluate)

    tune = commands.add_parser(
        "tune-search",
        help="choose beam size and length penalty on held-out data",
        description="Translate held-out data (the run's validation split by default) with "
        "every beam size and length penalty of a grid, score each with sacreBLEU and print "
        "the BLEU table and the best options, for `translate`/`evaluate --beam B --alpha A`.",
    )
    _add_search_args(tune, one_search=False)
    tune.add_argument(
        "--beams",
        type=_positive_int,
        nargs="+",
        default=[1, 5, 10],
        help="beam sizes to try (default 1 5 10)",
    )
    tune.add_argument(
        "--alphas",
        type=_non_negative_float,
        nargs="+",
        default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        help="length penalties to try with each beam above 1 (default 0 0.2 ... 1.0)",
    )
    held_out = tune.add_mutually_exclusive_group()
    held_out.add_argument(
        "--split",
        choices=("valid", "test"),
        default="valid",
        help="the run's split (default valid; test is refused: it must stay unseen)",
    )
    held_out.add_argument("--src", help="source file (with --ref) instead of a split")
    tune.add_argument("--ref", help="reference translations, line-aligned with --src")
    tune.add_argument("--output", help="also write the JSON report to this file")
    tune.add_argument("--json", action="store_true", help="print the JSON report")
    tune.set_defaults(func=cmd_tune_search, beam=1, alpha=0.0)

    serve = commands.add_parser(
        "serve",
        help="a translation web page and JSON API with attention heatmaps",
        description="Serve checkpoints over HTTP: GET / is a page that translates and draws "
        "the attention; POST /translate, GET /health and GET /info are the JSON API. "
        "Several --checkpoint are shown side by side.",
    )
    serve.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="a checkpoint folder or file, or a run directory; repeat to compare models",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument(
        "--beam", type=_positive_int, default=5, help="default beam size (default 5)"
    )
    serve.add_argument("--alpha", type=_non_negative_float, default=0.0, help="length penalty")
    serve.add_argument(
        "--batch-size", type=_positive_int, default=32, help="texts decoded together (default 32)"
    )
    serve.add_argument("--max-chars", type=_positive_int, default=1000, help="characters per text")
    serve.add_argument("--max-texts", type=_positive_int, default=64, help="texts per request")
    serve.add_argument(
        "--max-beam",
        type=_positive_int,
        default=20,
        help=f"largest beam a request may ask, at most {MAX_BEAM} (default 20)",
    )
    serve.add_argument(
        "--queue-size",
        type=_positive_int,
        default=32,
        help="requests that may wait; more are answered 503 (default 32)",
    )
    serve.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    serve.add_argument("--precision", choices=PRECISIONS, default="32")
    serve.set_defaults(func=cmd_serve)

    average = commands.add_parser(
        "average",
        help="average the parameters of checkpoints",
        description="Average model parameters of several checkpoints "
        "of the same model into one checkpoint.",
    )
    sources = average.add_mutually_exclusive_group(required=True)
    sources.add_argument("--checkpoints", nargs="+", help="checkpoints (folders or files)")
    sources.add_argument("--run", help="a run directory: average its last --last step checkpoints")
    average.add_argument(
        "--last",
        type=_positive_int,
        default=3,
        help="with --run: how many of the newest checkpoints (default 3)",
    )
    average.add_argument("--output", required=True, help="the averaged checkpoint file")
    average.set_defaults(func=cmd_average)

    export = commands.add_parser(
        "export",
        help="consolidate a checkpoint into one file",
        description="Write any checkpoint (single, DDP, DeepSpeed ZeRO 1-3; a run directory "
        "means its best) as one file: full fp32 weights, model config and tokenizer, "
        "loadable with torch.load(..., weights_only=True).",
    )
    export.add_argument("checkpoint", help="a checkpoint folder, file, or run directory")
    export.add_argument("output", help="the file to write, e.g. model.pt")
    export.set_defaults(func=cmd_export)
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
