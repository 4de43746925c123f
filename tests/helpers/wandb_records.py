"""Read back an offline W&B run (`run-<id>.wandb`) in tests.

wandb 0.31 has no public reader for these files. They are a LevelDB-style log: a 7-byte
header (":W&B", magic, version), then 32 KiB blocks of chunks, each with a 7-byte header
(checksum, length, type: 1 full, 2 first, 3 middle, 4 last); a block's tail shorter than a
chunk header is padding. Each reassembled record is a wandb_internal_pb2.Record.
"""

from __future__ import annotations

import json
import struct
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
