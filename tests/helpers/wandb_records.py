"""Read back an offline W&B run (`run-<id>.wandb`) in tests.

wandb 0.31 has no public reader for these files. They are a LevelDB-style log: a 7-byte
header (":W&B", magic, version), then 32 KiB blocks of chunks, each with a 7-byte header
(checksum, length, type: 1 full, 2 first, 3 middle, 4 last); a block's tail shorter than a
chunk header is padding. Each reassembled record is a wandb_internal_pb2.Record.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7


def records(path: Path) -> Iterator[Any]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:  # zero padding up to the block's end
            pos += left
            continue
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def key(item: Any) -> str:
    """An item's name: `key`, or its `nested_key` path (what wandb 0.31 writes)."""
    return item.key or "/".join(item.nested_key)


def read_run(path: Path) -> Dict[str, Any]:
    """{"id", "group", "name", "config": {key: value}, "history": [{key: value}],
    "summary": {...}}."""
    run: Dict[str, Any] = {"id": None, "config": {}, "history": [], "summary": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["id"] = record.run.run_id
            run["group"] = record.run.run_group
            run["name"] = record.run.display_name
            for item in record.run.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            run["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                if key(item):
                    run["summary"][key(item)] = json.loads(item.value_json)
    return run


def offline_runs(run_dir: Path) -> List[Dict[str, Any]]:
    """Every offline W&B run under run_dir/wandb, oldest first."""
    files = sorted((Path(run_dir) / "wandb").glob("offline-run-*/run-*.wandb"))
    return [read_run(f) for f in files]


def wait_until_finished(run_dir: Path, runs: int, timeout: float = 60.0) -> None:
    """Wait until `runs` offline runs under run_dir/wandb each end with their exit record.
    W&B's service writes the file behind `finish()`: on a busy machine a file read at once
    can still lack what finish() has already acknowledged."""
    deadline = time.monotonic() + timeout
    files: List[Path] = []
    while time.monotonic() < deadline:
        files = sorted((Path(run_dir) / "wandb").glob("offline-run-*/run-*.wandb"))
        if len(files) >= runs and all(_has_exit(f) for f in files[:runs]):
            return
        time.sleep(0.2)
    found = {str(f): (f.stat().st_size, _kinds(f)) for f in files}
    raise AssertionError(f"W&B offline runs not finished after {timeout} s: {found}")


def _kinds(path: Path) -> List[str]:
    try:
        return [r.WhichOneof("record_type") for r in records(path)]
    except Exception as exc:  # noqa: BLE001 - the point is to show what the file holds
        return [f"unreadable: {exc}"]


def _has_exit(path: Path) -> bool:
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in records(path))
    except Exception:  # noqa: BLE001 - a file still being written may end mid-record
        return False
