"""`dist-lstm serve` through its HTTP interface: a real server on a loopback port, and the
page in headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

from dist_lstm import cli
from dist_lstm.translate.inference import MAX_BEAM, SearchOptions, Translator, load_model
from dist_lstm.translate.serve import ServeLimits, TranslationService, create_app
from dist_lstm.translate.serve import service as service_module
from dist_lstm.translate.serve.service import JobOptions
from tests.helpers.paths import ROOT

SENTENCE = "Ein Hund läuft durch den Schnee."
LONGER = "Eine Frau in einem roten Kleid steht mit zwei Kindern vor einem großen Gebäude."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def exchange(port, path, body=None, raw: bytes | None = None):
    """(status, headers, decoded JSON or text) of a GET, or of a POST when a body is given."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            status, headers, payload = reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as failure:
        status, headers, payload = failure.code, failure.headers, failure.read()
    try:
        return status, headers, json.loads(payload)
    except ValueError:
        return status, headers, payload.decode()


def request(port, path, body=None, raw: bytes | None = None):
    """(status, decoded JSON or text) of a GET, or of a POST when a body is given."""
    status, _, payload = exchange(port, path, body, raw)
    return status, payload


def start_server(log: Path, *args) -> tuple[subprocess.Popen, int]:
    """`dist-lstm serve` in a process of its own, everything it prints going to `log`."""
    port = free_port()
    command = [sys.executable, "-m", "dist_lstm", "serve", "--port", str(port), *map(str, args)]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server ended: {log.read_text()}")
        try:
            if request(port, "/health")[0] == 200:
                return server, port
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise AssertionError("server did not answer /health within 120 s")


@pytest.fixture(scope="module")
def checkpoints(smoke_run):
    return smoke_run / "checkpoints" / "step_00000150", smoke_run / "checkpoints" / "step_00000075"


@pytest.fixture(scope="module")
def served(checkpoints, tmp_path_factory):
    """Two checkpoints side by side; small limits so the tests can reach them. Yields the
    port and the file the server logs to."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    process, port = start_server(
        log,
        *("--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1]),
        *("--max-chars", 200, "--max-texts", 3, "--max-beam", 6),
    )
    yield port, log
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(served) -> int:
    return served[0]


@pytest.fixture(scope="module")
def server_log(served) -> Path:
    return served[1]


def test_health_and_info(server, checkpoints, smoke_run):
    status, health = request(server, "/health")
    assert status == 200 and health["status"] == "ok"
    assert health["models"] == [
        f"{smoke_run.name}/step_00000150",
        f"{smoke_run.name}/step_00000075",
    ]
    status, info = request(server, "/info")
    first = info["models"][0]
    loaded = load_model(checkpoints[0])
    assert first["step"] == 150 and first["checkpoint"] == str(checkpoints[0].resolve())
    assert first["src_vocab_size"] == loaded.tokenizer.src_vocab_size
    assert first["tgt_vocab_size"] == loaded.tokenizer.tgt_vocab_size
    assert first["languages"] == {"source": "de", "target": "en"}
    assert first["model"]["hidden_size"] == loaded.config["model"]["hidden_size"]
    assert "val_bleu" in first["recorded_scores"]  # from the run's metrics.jsonl
    assert info["limits"]["max_chars"] == 200


def test_translate_with_alignments_gives_attention_and_word_alignment(server, checkpoints):
    """The reply's pieces are the sentence's own, each attention row a distribution over
    its real source pieces (the shorter sentence is padded in their shared search), and
    the alignment gives every output word one source word."""
    texts = [SENTENCE, LONGER]
    status, reply = request(server, "/translate", {"texts": texts, "beam": 3, "alignments": True})
    assert status == 200, reply
    assert reply["results"][0]["model"].endswith("step_00000150")
    loaded = load_model(checkpoints[0])
    expected = Translator(loaded, SearchOptions(beam=3)).translate(texts)
    tokenizer = loaded.tokenizer
    for text, translation, sentence in zip(texts, expected, reply["results"][0]["translations"]):
        assert sentence["source"] == text and sentence["translation"] == translation
        real_pieces = tokenizer.pieces("src", tokenizer.encode("src", [text])[0])
        assert sentence["source_pieces"] == real_pieces
        assert len(sentence["attention"]) == len(sentence["target_pieces"]) > 0
        for row in sentence["attention"]:  # rounded to 4 decimals by the server
            assert len(row) == len(real_pieces) and sum(row) == pytest.approx(1, abs=2e-3)
        pairs = [tuple(map(int, p.split("-"))) for p in sentence["alignment"].split()]
        source_words, target_words = len(text.split()), len(translation.split())
        assert sorted(j for _, j in pairs) == list(range(target_words))  # each word once
        assert all(0 <= i < source_words for i, _ in pairs)


def test_several_texts_keep_their_order_and_each_model_answers(server, checkpoints):
    texts = ["Zwei Männer spielen Fußball.", SENTENCE, "Eine Frau liest ein Buch."]
    status, reply = request(server, "/translate", {"texts": texts, "beam": 2})
    assert status == 200, reply
    assert len(reply["results"]) == 2
    for result, checkpoint in zip(reply["results"], checkpoints):
        alone = Translator(load_model(checkpoint), SearchOptions(beam=2)).translate(texts)
        assert [t["translation"] for t in result["translations"]] == alone
        assert "attention" not in result["translations"][0]  # only when asked for
    status, reply = request(
        server, "/translate", {"text": SENTENCE, "model": reply["results"][1]["model"]}
    )
    assert status == 200 and len(reply["results"]) == 1


@pytest.mark.parametrize(
    "body, raw, status, field, words",
    [
        ({"text": ""}, None, 422, "text", "is empty"),
        ({"text": "x" * 201}, None, 422, "text", "the limit is 200"),
        ({"text": "Hallo", "beam": 0}, None, 422, "beam", "from 1 to 6"),
        ({"text": "Hallo", "beam": 7}, None, 422, "beam", "from 1 to 6"),  # over --max-beam
        ({"texts": ["Hallo"] * 4}, None, 422, "texts", "4 items; the limit is 3"),  # --max-texts
        ({"texts": ["Hallo", 3]}, None, 422, "texts[1]", "must be a string"),
        ({"text": "Hallo", "model": "nope"}, None, 422, "model", "is not served"),
        ({"text": "Hallo", "beams": 2}, None, 422, "beams", "unknown field"),
        (None, b'{"text": "Hal', 400, None, "not valid JSON"),
        (None, b"\xff\xfe\x00", 400, None, "not UTF-8"),
        (None, b"[1, 2]", 400, None, "JSON object"),
        (None, b"[" * 5000 + b"]" * 5000, 400, None, "nests JSON arrays or objects too deeply"),
        (None, b'{"text": ' * 5000 + b"1" + b"}" * 5000, 400, None, "too deeply"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(
    server, server_log, body, raw, status, field, words
):
    got, reply = request(server, "/translate", body, raw=raw)
    assert got == status and reply["field"] == field and words in reply["error"], reply
    assert request(server, "/health")[0] == 200  # still serving
    assert "Traceback" not in server_log.read_text()  # a bad request is not a server error


def test_the_largest_beam_and_number_of_texts_are_served(server):
    status, reply = request(server, "/translate", {"texts": ["Hallo", SENTENCE, "Ja"], "beam": 6})
    assert status == 200 and reply["beam"] == 6, reply
    assert all(len(result["translations"]) == 3 for result in reply["results"])


def test_unknown_routes_and_methods_answer_json(server):
    status, reply = request(server, "/nowhere")
    assert status == 404 and "POST /translate" in reply["error"]
    status, reply = request(server, "/translate")
    assert status == 405 and "does not take GET" in reply["error"]


def test_a_checkpoint_that_cannot_load_stops_start_up_with_the_cli_message(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    done = subprocess.run(
        [sys.executable, "-m", "dist_lstm", "serve", "--checkpoint", str(junk), "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "is not a dist-lstm checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_named(checkpoints):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dist_lstm",
                "serve",
                "--checkpoint",
                str(checkpoints[0]),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_a_max_beam_over_what_search_holds_stops_start_up(checkpoints, capsys):
    too_wide = str(MAX_BEAM + 1)
    code = cli.main(["serve", "--checkpoint", str(checkpoints[0]), "--max-beam", too_wide])
    err = capsys.readouterr().err
    assert code == 2 and f"--max-beam {too_wide} is too wide: the largest beam is {MAX_BEAM}" in err


# ------------------------------------------------------------- a held model, in process
class HeldSearch:
    """Wraps the service's search: each search signals that it started, then waits to be
    released, so a test knows the worker is busy and that no request can finish early."""

    def __init__(self, search):
        self.search, self.started, self.release = search, threading.Event(), threading.Event()

    def __call__(self, job, texts):
        self.started.set()
        assert self.release.wait(timeout=60), "the test never released the search"
        return self.search(job, texts)


@contextlib.contextmanager
def serving_in_thread(app) -> Iterator[int]:
    """`app` under uvicorn on a loopback port, in a thread of this process; yields the
    port. The socket listens before the thread starts, so requests may be sent at once."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        listener.close()


def test_a_full_queue_answers_503_with_retry_after_over_http(checkpoints):
    """One request searching, one waiting (--queue-size 1): a third is refused at once with
    503 and Retry-After, and the waiting one is still answered once the search ends."""
    service = TranslationService([checkpoints[0]], SearchOptions(beam=1), "cpu")
    held = service.run = HeldSearch(service.run)  # the search create_app's batcher calls
    app = create_app(service, ServeLimits(queue_size=1))
    body = {"text": SENTENCE}
    with serving_in_thread(app) as port, ThreadPoolExecutor(max_workers=3) as clients:
        try:
            first = clients.submit(exchange, port, "/translate", body)
            assert held.started.wait(timeout=60)  # the worker took it: the queue is empty
            others = [clients.submit(exchange, port, "/translate", body) for _ in range(2)]
            # Whichever of the two comes second finds the queue full; no 200 can come
            # first, as the search is held.
            done, _ = wait(others, timeout=60, return_when=FIRST_COMPLETED)
            assert done, "neither request was refused while the queue was full"
            status, headers, reply = done.pop().result()
        finally:
            held.release.set()  # also after a failed assertion, so that the server stops
        assert status == 503 and headers["Retry-After"] == "1", reply
        assert reply["field"] is None and "busy" in reply["error"]
        answers = [first.result(), *(other.result() for other in others)]
    assert sorted(status for status, _, _ in answers) == [200, 200, 503]
    alone = Translator(load_model(checkpoints[0]), SearchOptions(beam=1)).translate([SENTENCE])
    for status, _, reply in answers:
        if status == 200:
            assert reply["results"][0]["translations"][0]["translation"] == alone[0]


def test_each_model_decodes_with_the_output_limit_its_run_validated_with(checkpoints, monkeypatch):
    """A run validated with a x source_length + b output pieces: serve cuts there too, and
    /info says so (models side by side may come from runs with different limits)."""

    def validated_with_a_short_limit(path, device):
        loaded = load_model(path, device)
        trainer = {**loaded.config.get("trainer", {}), "decode_max_len_a": 0.0}
        loaded.config["trainer"] = {**trainer, "decode_max_len_b": 2}
        return loaded

    unlimited = Translator(load_model(checkpoints[0]), SearchOptions(beam=2))
    assert len(unlimited.translate_detailed([LONGER])[0].target_pieces) > 2
    monkeypatch.setattr(service_module, "load_model", validated_with_a_short_limit)
    service = TranslationService([checkpoints[0]], SearchOptions(beam=2), "cpu")
    info = service.info(ServeLimits())["models"][0]
    assert info["output_limit"] == {"max_len_a": 0.0, "max_len_b": 2}
    (served,) = service.run(JobOptions(service.names[0], 2, False), [LONGER])
    assert 1 <= len(served["target_pieces"]) <= 2


# ------------------------------------------------------------------------ browser
def chromium_or_skip() -> str:
    """Debian's chromium, driven by Playwright; the test is skipped, saying why, when
    either is missing (.ci/run installs both)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium on this machine: `apt-get install chromium` to run the page test")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    return browser


SCREENSHOT = os.environ.get("DIST_LSTM_SERVE_SCREENSHOT")  # where to keep the page's image


def test_the_page_translates_and_draws_the_heatmap_in_a_browser(server, checkpoints, tmp_path):
    from playwright.sync_api import sync_playwright

    browser_path = chromium_or_skip()
    status, reply = request(
        server, "/translate", {"texts": [SENTENCE], "beam": 5, "alignments": True}
    )
    expected = [r["translations"][0] for r in reply["results"]]
    tokenizer = load_model(checkpoints[0]).tokenizer  # both checkpoints share it
    source_pieces = tokenizer.pieces("src", tokenizer.encode("src", [SENTENCE])[0])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=browser_path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"http://127.0.0.1:{server}/")
            page.fill("#source", SENTENCE)
            page.click("#translate")
            page.wait_for_selector("table.heatmap", timeout=60_000)
            columns = page.locator(".model")
            assert columns.count() == len(expected)
            for index, sentence in enumerate(expected):
                column = columns.nth(index)
                assert column.locator(".translation").inner_text() == sentence["translation"]
                heads = column.locator("table.heatmap thead th").all_inner_texts()
                assert heads == ["", *source_pieces]  # columns: the sentence's own pieces
                row_heads = column.locator("table.heatmap tbody th").all_inner_texts()
                assert row_heads == sentence["target_pieces"]
                cells = column.locator("table.heatmap tbody tr").first.locator("td")
                assert cells.count() == len(source_pieces)
            cell = columns.first.locator("table.heatmap tbody td").nth(1)
            cell.hover()
            first = expected[0]
            hover = re.fullmatch(r"(.+) ← (.+): (\d\.\d{3})", page.inner_text("#hover"))
            assert hover and hover[1] == first["target_pieces"][0]
            assert hover[2] == source_pieces[1]
            assert float(hover[3]) == pytest.approx(first["attention"][0][1], abs=6e-4)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            if SCREENSHOT:
                Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp_path / "page.png", SCREENSHOT)
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
