"""What strategies write under a checkpoint's `state/` folder, named once for the writers
(dist_lstm/strategy/) and for the reader of full weights (dist_lstm/checkpoint/consolidate.py).

- single/DDP: torch.distributed.checkpoint files (`.metadata`, `__<rank>_0.distcp`) holding
  MODEL_KEY and OPTIM_KEY in canonical, unwrapped keys;
- DeepSpeed: its own ZeRO files under DEEPSPEED_TAG, and once converted for another world
  size, DeepSpeed's universal format under UNIVERSAL/DEEPSPEED_TAG.
"""

from __future__ import annotations

import warnings

MODEL_KEY = "model"
OPTIM_KEY = "optim"
DCP_METADATA = ".metadata"
DEEPSPEED_TAG = "zero"
UNIVERSAL = "universal"

# DCP warns on every call without a process group (also from the thread of an
# asynchronous save); a single process is intended wherever that happens here.
warnings.filterwarnings("ignore", message="torch.distributed is disabled")
