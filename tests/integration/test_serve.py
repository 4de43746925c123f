"""`dist-lstm serve` through its HTTP interface: a real server on a loopback port, and the
page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dist_lstm import cli
from dist_lstm.inference import MAX_BEAM, SearchOptions, Translator, load_model
from tests.conftest import ROOT

SENTENCE = "Ein Hund läuft durch den Schnee."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(port, path, body=None, raw: bytes | None = None):
    """(status, decoded JSON or text) of a GET, or of a POST when a body is given."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            status, payload = reply.status, reply.read()
    except urllib.error.HTTPError as failure:
        status, payload = failure.code, failure.read()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode()


def start_server(*args) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "dist_lstm", "serve", "--port", str(port), *map(str, args)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server ended: {server.stdout.read().decode()}")
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
def server(checkpoints):
    """Two checkpoints side by side; small limits so the tests can reach them."""
    process, port = start_server(
        "--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1], "--max-chars", 200
    )
    yield port
    process.terminate()
    process.wait(timeout=30)


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
    status, reply = request(server, "/translate", {"text": SENTENCE, "beam": 3, "alignments": True})
    assert status == 200, reply
    assert [r["model"] for r in reply["results"]][0].endswith("step_00000150")
    sentence = reply["results"][0]["translations"][0]
    expected = Translator(load_model(checkpoints[0]), SearchOptions(beam=3)).translate([SENTENCE])
    assert sentence["translation"] == expected[0]
    rows, columns = len(sentence["target_pieces"]), len(sentence["source_pieces"])
    assert rows > 0 and columns == len(sentence["source_pieces"])
    assert len(sentence["attention"]) == rows
    assert all(len(row) == columns and abs(sum(row) - 1) < 1e-2 for row in sentence["attention"])
    pairs = [tuple(map(int, p.split("-"))) for p in sentence["alignment"].split()]
    source_words, target_words = len(SENTENCE.split()), len(sentence["translation"].split())
    assert sorted({j for _, j in pairs}) == list(range(len({j for _, j in pairs})))
    assert all(0 <= i <= source_words and j <= target_words for i, j in pairs)


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
        ({"text": "Hallo", "beam": 0}, None, 422, "beam", "from 1 to 20"),
        ({"texts": ["Hallo", 3]}, None, 422, "texts[1]", "must be a string"),
        ({"text": "Hallo", "model": "nope"}, None, 422, "model", "is not served"),
        ({"text": "Hallo", "beams": 2}, None, 422, "beams", "unknown field"),
        (None, b'{"text": "Hal', 400, None, "not valid JSON"),
        (None, b"\xff\xfe\x00", 400, None, "not UTF-8"),
        (None, b"[1, 2]", 400, None, "JSON object"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(server, body, raw, status, field, words):
    got, reply = request(server, "/translate", body, raw=raw)
    assert got == status and reply["field"] == field and words in reply["error"], reply
    assert request(server, "/health")[0] == 200  # still serving


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


def test_the_page_translates_and_draws_the_heatmap_in_a_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    browser_path = chromium_or_skip()
    status, reply = request(
        server, "/translate", {"texts": [SENTENCE], "beam": 5, "alignments": True}
    )
    expected = [r["translations"][0] for r in reply["results"]]
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
                body_rows = column.locator("table.heatmap tbody tr")
                assert body_rows.count() == len(sentence["target_pieces"])
                assert body_rows.first.locator("td").count() == len(sentence["source_pieces"])
            cell = columns.first.locator("table.heatmap tbody td").first
            cell.hover()
            assert re.search(r": \d\.\d{3}$", page.inner_text("#hover"))
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            if SCREENSHOT:
                Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp_path / "page.png", SCREENSHOT)
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
