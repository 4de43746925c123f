"""train.py with signals sent from inside the run, at exact points of a save.

STOP_AT_STEP=N: the process sends itself SIGTERM during optimizer step N (a stop request,
as a scheduler would send it), so the run stops after step N with a checkpoint.
SIGNAL_IN_SAVE=STEP:NAME: while checkpoint STEP is being committed (every file written and
renamed into place, its COMPLETE marker not yet written) the process sends itself signal
NAME: SIGTERM is a second stop request during the save, SIGKILL kills the save midway.

Used by the distributed tests to check the commit order and that a second signal cannot
cut a checkpoint short.
"""

import os
import runpy
import signal
import sys
from pathlib import Path

from dist_lstm.checkpoint.manager import COMPLETE, step_name
from dist_lstm.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
original_step = Trainer._optimizer_step
original_write_text = Path.write_text


def step_with_stop_request(self, *args, **kwargs):
    if self.state.step + 1 == int(os.environ.get("STOP_AT_STEP", "0")):
        os.kill(os.getpid(), signal.SIGTERM)
    original_step(self, *args, **kwargs)


def write_text_with_signal(self, *args, **kwargs):
    step, _, name = os.environ.get("SIGNAL_IN_SAVE", "").partition(":")
    if step and self.name == COMPLETE and self.parent.name == step_name(int(step)):
        os.kill(os.getpid(), signal.Signals[name])
    return original_write_text(self, *args, **kwargs)


Trainer._optimizer_step = step_with_stop_request
Path.write_text = write_text_with_signal
sys.argv[0] = str(ROOT / "train.py")
runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
