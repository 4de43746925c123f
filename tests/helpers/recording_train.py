"""train.py that records what each rank did, for the distributed tests.

BATCH_LOG=PREFIX: each rank appends to PREFIX.rank<N>.jsonl, per epoch it starts, the
epoch's global batch plan ({"epoch", "world_size", "plan"}), then every batch of dataset
indices it takes for training ({"epoch", "batch"}), in order.
EXIT_STATUS_DIR=DIR: each rank writes its exit status to DIR/rank<N>.
"""

import json
import os
import runpy
import sys
from pathlib import Path

from dist_lstm.data.sampler import BucketBatchSampler

ROOT = Path(__file__).resolve().parents[2]
RANK = os.environ.get("RANK", "0")
original_iter = BucketBatchSampler.__iter__


def recording_iter(self):
    with open(f"{os.environ['BATCH_LOG']}.rank{RANK}.jsonl", "a") as log:
        plan = self.epoch_plan(self.epoch).as_lists()
        log.write(json.dumps({"epoch": self.epoch, "world_size": self.world_size, "plan": plan}))
        log.write("\n")
        for batch in original_iter(self):
            log.write(json.dumps({"epoch": self.epoch, "batch": batch}) + "\n")
            log.flush()
            yield batch


if os.environ.get("BATCH_LOG"):
    BucketBatchSampler.__iter__ = recording_iter
sys.argv[0] = str(ROOT / "train.py")
status = 1
try:
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    status = 0
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    raise
finally:
    if os.environ.get("EXIT_STATUS_DIR"):
        folder = Path(os.environ["EXIT_STATUS_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rank{RANK}").write_text(f"{status}\n")
