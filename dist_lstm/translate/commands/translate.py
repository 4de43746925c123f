"""`dist-lstm translate`: raw text in (a file, gzip or not, or stdin), one translation
per line out; optionally each line's word alignment and attention heatmaps."""

from __future__ import annotations

import argparse
import gzip
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Iterator, List, Tuple

from dist_lstm.errors import UserError
from dist_lstm.translate.commands.options import add_search_arguments, positive_int, translator
from dist_lstm.translate.inference import Translator

STREAM_CHUNK = 2048  # lines translated together when input is not interactive


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "translate",
        help="translate raw text, one sentence per line",
        description="Translate raw sentences (a file, or stdin) "
        "line by line; one output line per input line.",
    )
    add_search_arguments(parser)
    parser.add_argument("--input", help="source text file, gzip if it ends in .gz (default: stdin)")
    parser.add_argument("--output", help="where translations go (default: stdout)")
    parser.add_argument(
        "--alignments",
        action="store_true",
        help="after each translation, a tab and its word alignment from the attention, "
        "Pharaoh format: 'i-j' = source word i, output word j (0-based)",
    )
    parser.add_argument(
        "--attention-plot",
        metavar="DIR",
        help="write an attention heatmap (PNG) per sentence into DIR, for the first "
        "--plot-lines lines",
    )
    parser.add_argument(
        "--plot-lines",
        type=positive_int,
        default=10,
        help="how many lines --attention-plot draws (default 10)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = translator(args)
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
                _write_with_attention(model, lines, first, out, args)
            else:
                for translation in model.translate(lines, first_line=first):
                    out.write(translation + "\n")
            out.flush()
    return 0


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
