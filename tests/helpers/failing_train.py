"""train.py with a fault injected: the rank named by FAIL_RANK raises at FAIL_STEP (in
the first attempt only, when torchrun restarts the workers).

Used by the distributed tests to check that one failing rank ends the whole job quickly
with a message naming it, instead of leaving the other ranks waiting in a collective,
and that `torchrun --max-restarts` restarts resume from the last checkpoint.
"""

import os
import runpy
import sys
from pathlib import Path

from dist_lstm.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
original_step = Trainer._optimizer_step


def failing_step(self, *args, **kwargs):
    original_step(self, *args, **kwargs)
    if (
        self.state.step == int(os.environ["FAIL_STEP"])
        and os.environ["RANK"] == os.environ["FAIL_RANK"]
        and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    ):
        raise RuntimeError("injected failure for the test")


Trainer._optimizer_step = failing_step
sys.argv[0] = str(ROOT / "train.py")
runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
