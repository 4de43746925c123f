"""Load on `dist-lstm serve`: N concurrent clients on loopback, a fixed number of requests.

    python benchmarks/serve_load.py --checkpoint RUN_DIR            # 8 clients, 400 requests
    python benchmarks/serve_load.py --checkpoint RUN_DIR --smoke   # 2 clients, 16 requests

Starts the server as a user would (`python -m dist_lstm serve`), then for plain requests
and for requests with alignments in turn: every client sends one test_2016_flickr sentence
per request, the next as soon as the answer comes, until the total is sent. Records
requests/s, p50/p99 latency, answers other than 200, and the server's peak resident
memory (VmHWM) after each phase, to benchmarks/results/serve_load[_LABEL].json.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dist_lstm.data.corpus import read_lines  # noqa: E402
from dist_lstm.translate.inference import dataset_split_files, load_model  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(port: int, body: dict) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/translate", data=json.dumps(body).encode()
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as reply:
            reply.read()
            return reply.status
    except urllib.error.HTTPError as failure:
        return failure.code


def wait_until_up(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server ended: {server.stdout.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the server did not answer /health within 180 s")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_phase(port: int, sentences: list, clients: int, total: int, beam: int, alignments: bool):
    latencies, statuses, lock = [], [], threading.Lock()
    next_index = iter(range(total))

    def client() -> None:
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            body = {"text": sentences[index % len(sentences)], "beam": beam}
            if alignments:
                body["alignments"] = True
            started = time.perf_counter()
            status = post(port, body)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": total,
        "requests_per_sec": round(total / wall, 2),
        "latency_p50_ms": round(1000 * statistics.median(ordered), 1),
        "latency_p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "not_200": sum(status != 200 for status in statuses),
        "wall_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32, help="serve --batch-size")
    parser.add_argument("--label", help="names the result file: serve_load_LABEL.json")
    parser.add_argument("--smoke", action="store_true", help="2 clients, 16 requests, no file")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.requests = 2, 16

    loaded = load_model(args.checkpoint)
    sentences = read_lines(dataset_split_files(loaded.data_config, "test")[0])
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dist_lstm",
            "serve",
            "--checkpoint",
            args.checkpoint,
            "--port",
            str(port),
            "--batch-size",
            str(args.batch_size),
            "--queue-size",
            str(max(32, args.clients)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_up(server, port)
        idle_mb = peak_rss_mb(server.pid)
        phases = {}
        for name, alignments in (("plain", False), ("alignments", True)):
            phases[name] = load_phase(
                port, sentences, args.clients, args.requests, args.beam, alignments
            )
            phases[name]["server_peak_rss_mb"] = round(peak_rss_mb(server.pid), 1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = {
        "checkpoint": str(loaded.path),
        "model_parameters": sum(p.numel() for p in loaded.model.parameters()),
        "clients": args.clients,
        "beam": args.beam,
        "serve_batch_size": args.batch_size,
        "server_rss_after_start_mb": round(idle_mb, 1),
        "phases": phases,
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
    }
    write_result(
        f"serve_load_{args.label}" if args.label else "serve_load", report, smoke=args.smoke
    )


if __name__ == "__main__":
    main()
