"""The HTTP side of `dist-lstm serve` (Starlette, run by uvicorn).

    GET  /           the translation page (page.html)
    GET  /health     {"status": "ok", ...}
    GET  /info       models, vocabulary sizes, checkpoint steps, recorded BLEU, limits
    POST /translate  {"text": "..."} or {"texts": [...]}, optional "beam", "alignments",
                     "model" -> {"results": [{"model", "translations": [...]}, ...]}

Every error is a JSON object {"error": message, "field": name or null} with a 4xx status
(503 when the queue is full); a failure inside a search answers 500 without a traceback
and the server goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
from importlib import resources
from typing import Any, Dict, List, Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from dist_lstm.translate.serve.batching import Batcher, Overloaded
from dist_lstm.translate.serve.service import JobOptions, ServeLimits, TranslationService

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


class BadRequest(Exception):
    """A request the server refuses, naming the field at fault."""

    def __init__(self, message: str, field: Optional[str] = None, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


def error(message: str, field: Optional[str], status: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def parse_translate_request(
    body: bytes, limits: ServeLimits, models: List[str], default_beam: int
) -> tuple[JobOptions, List[str], bool]:
    """The job, its texts, and whether the request sent one "text" (not "texts")."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"the request body is over {MAX_BODY_BYTES} bytes", None, 413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8 (byte {exc.start})", None, 400) from None
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", None, 400) from None
    except RecursionError:  # arrays or objects nested past the parser's recursion limit
        raise BadRequest(
            "the request body nests JSON arrays or objects too deeply to parse; send one "
            'flat object, e.g. {"text": "Ein Hund."}',
            None,
            400,
        ) from None
    if not isinstance(payload, dict):
        raise BadRequest('send a JSON object, e.g. {"text": "Ein Hund."}', None, 400)
    known = {"text", "texts", "beam", "alignments", "model"}
    unknown = sorted(set(payload) - known)
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; fields: {', '.join(sorted(known))}", unknown[0]
        )
    single = "text" in payload
    if single == ("texts" in payload):
        raise BadRequest('give either "text" (a string) or "texts" (a list of strings)', "text")
    texts = [payload["text"]] if single else payload["texts"]
    name = "text" if single else "texts"
    if not isinstance(texts, list) or not texts:
        raise BadRequest(f'"{name}" must be a non-empty list of strings', name)
    if len(texts) > limits.max_texts:
        raise BadRequest(f'"texts" has {len(texts)} items; the limit is {limits.max_texts}', name)
    for index, item in enumerate(texts):
        where = name if single else f"texts[{index}]"
        if not isinstance(item, str):
            raise BadRequest(f'"{where}" must be a string', where)
        if not item.strip():
            raise BadRequest(f'"{where}" is empty: send a sentence to translate', where)
        if len(item) > limits.max_chars:
            raise BadRequest(
                f'"{where}" has {len(item)} characters; the limit is {limits.max_chars} '
                "(serve --max-chars)",
                where,
            )
    beam = payload.get("beam", default_beam)
    if isinstance(beam, bool) or not isinstance(beam, int) or not 1 <= beam <= limits.max_beam:
        raise BadRequest(f'"beam" must be an integer from 1 to {limits.max_beam}', "beam")
    alignments = payload.get("alignments", False)
    if not isinstance(alignments, bool):
        raise BadRequest('"alignments" must be true or false', "alignments")
    model = payload.get("model")
    if model is not None and model not in models:
        raise BadRequest(f'"model" {model!r} is not served; models: {", ".join(models)}', "model")
    return JobOptions(model or "", beam, alignments), texts, single


def create_app(service: TranslationService, limits: ServeLimits) -> Starlette:
    batcher = Batcher(service.run, limits.queue_size, limits.batch_texts)
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "models": service.names,
                "waiting": batcher.waiting,
                "batches": batcher.batches,
            }
        )

    async def info(request: Request) -> Response:
        return JSONResponse(service.info(limits))

    async def translate(request: Request) -> Response:
        try:
            job, texts, _ = parse_translate_request(
                await request.body(), limits, service.names, service.options.beam
            )
        except BadRequest as exc:
            return error(str(exc), exc.field, exc.status)
        names = [job.model] if job.model else service.names
        results: List[Dict[str, Any]] = []
        for name in names:
            options = JobOptions(name, job.beam, job.alignments)
            try:
                translations = await batcher.submit(options, texts)
            except Overloaded:
                return error(
                    f"the server is busy ({limits.queue_size} requests waiting); retry shortly",
                    None,
                    503,
                    **{"Retry-After": "1"},
                )
            except Exception as exc:  # logged with its traceback by the batcher
                return error(f"translation failed: {type(exc).__name__}: {exc}", None, 500)
            served = service.models[name]
            results.append(
                {"model": name, "step": served.loaded.step, "translations": translations}
            )
        return JSONResponse({"beam": job.beam, "results": results})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        hint = {
            404: "routes: GET /, /health, /info; POST /translate",
            405: f"{request.url.path} does not take {request.method}",
        }
        return error(
            f"{exc.detail}: {hint.get(exc.status_code, '')}".rstrip(": "), None, exc.status_code
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        batcher.start()
        yield
        await batcher.stop()

    return Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/info", info),
            Route("/translate", translate, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
