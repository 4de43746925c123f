"""`dist-lstm serve`: checkpoints over HTTP (a page that translates and draws the
attention; a JSON API), with the decoding commands' search arguments and the server's
own defaults and limits."""

from __future__ import annotations

import argparse
import logging

from dist_lstm.errors import UserError
from dist_lstm.translate.commands.options import add_search_arguments, device, positive_int
from dist_lstm.translate.inference import MAX_BEAM, SearchOptions, check_beam

log = logging.getLogger(__name__)


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="a translation web page and JSON API with attention heatmaps",
        description="Serve checkpoints over HTTP: GET / is a page that translates and draws "
        "the attention; POST /translate, GET /health and GET /info are the JSON API. "
        "Several --checkpoint are shown side by side.",
    )
    add_search_arguments(
        parser,
        checkpoint_help="a checkpoint folder or file, or a run directory; repeat to compare models",
        batch_size=32,
        output_limit=False,
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--max-chars", type=positive_int, default=1000, help="characters per text")
    parser.add_argument("--max-texts", type=positive_int, default=64, help="texts per request")
    parser.add_argument(
        "--max-beam",
        type=positive_int,
        default=20,
        help=f"largest beam a request may ask, at most {MAX_BEAM} (default 20)",
    )
    parser.add_argument(
        "--queue-size",
        type=positive_int,
        default=32,
        help="requests that may wait; more are answered 503 (default 32)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    service = TranslationService(args.checkpoint, options, device(args))
    check_port_free(args.host, args.port)
    log.info("serving %s on http://%s:%d", ", ".join(service.names), args.host, args.port)
    uvicorn.run(create_app(service, limits), host=args.host, port=args.port, log_level="warning")
    return 0


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process holds before the models load into a server that
    could not listen."""
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
