"""DeepSpeed ZeRO, configured from our own config (no second config file).

The DeepSpeed config dict is derived from `optim`, `trainer` and `strategy` values, so
users keep one source of truth. Optimizers are plain torch ones, so nothing needs
compiling (DeepSpeed's CPU accelerator runs them too).

Gradient accumulation stays with our trainer, whose groups vary in length (the last one
of an epoch is short). For ZeRO 1 and 2 every backward of a group runs inside DeepSpeed's
`coalesce_grad_reduction`, which leaves gradients on each rank until `step` and then
reduces them in parameter order. That order matters: ZeRO-2 otherwise reduces each
gradient from its autograd hook, and a seq2seq model's hooks fire in a different order on
ranks whose batches differ in shape (the ties between one LSTM's weights are broken by
the autograd queue's state), so bucket slots of equal-shaped tensors (an LSTM's forward
and reverse weights) were averaged with each other; measured: the encoder LSTM trained
on wrong gradients. Stage 0 has no partitioned reduction and keeps DeepSpeed's
unmanaged mode, where `step` is the boundary.

ZeRO-3 also partitions the weights and gathers each module's weights when the module
runs, one collective per call. The decoder runs once per target position, so ranks
whose batches have different target lengths would issue different numbers of gathers
and deadlock or mix up data (measured: gloo aborted on the first batch). Under stage 3
every micro-batch's targets are therefore PAD-extended to the longest on any rank
(`align_batch`; padding adds no loss and no gradient). Validation decodes with a
data-dependent number of steps too, so it runs on a plain replica of the model that
receives the gathered weights once per validation.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from dist_lstm.batch import Batch
from dist_lstm.config.schema import DeepSpeedStrategyConfig
from dist_lstm.errors import UserError
from dist_lstm.strategy.base import Strategy
from dist_lstm.strategy.ddp import CollectivesMixin, init_process_group
from dist_lstm.strategy.formats import DEEPSPEED_TAG, UNIVERSAL
from dist_lstm.topology import Topology

log = logging.getLogger(__name__)


def deepspeed_config(zero_stage: int, clip_grad_norm: float, precision: str) -> Dict[str, Any]:
    """The DeepSpeed config dict for our training loop."""
    return {
        # DeepSpeed casts the model itself (no autocast from our side).
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        # Our batches are token budgets, not a fixed sentence count; DeepSpeed only
        # uses this for its throughput bookkeeping.
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        # Coalesced reduction (ZeRO 1 and 2) needs the managed mode; with one micro-batch per
        # "step" in DeepSpeed's eyes, each `step` call is the boundary either way.
        "managed_gradient_accumulation": zero_stage > 0,
        "gradient_clipping": clip_grad_norm,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class DeepSpeedStrategy(CollectivesMixin, Strategy):
    state_format = "deepspeed"
    # Precision goes into DeepSpeed's bf16/fp16 sections, as ZeRO checkpoints were written.
    engine_casts_model = True

    def __init__(self, topology: Topology, config: DeepSpeedStrategyConfig):
        super().__init__(topology, config)
        self.timeout_s = config.timeout_s
        self.zero_stage = config.zero_stage
        init_process_group(topology, config.backend, config.timeout_s)
        self.engine = None
        # Open from the first backward of an accumulation group until `step`.
        self._pending_reduction = ExitStack()
        self._replica: Optional[torch.nn.Module] = None  # stage 3: full-weight copy
        self._universal = False  # resuming from a universal checkpoint (world size changed)

    def wrap(self, model: torch.nn.Module, optimizer_factory) -> None:
        import deepspeed

        skip_shared_memory_op()
        model = model.to(self.device)
        if self.zero_stage == 3:
            self._replica = copy.deepcopy(model)  # before DeepSpeed partitions the weights
        optimizer = optimizer_factory(model)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            config={
                **deepspeed_config(self.zero_stage, self.clip_grad_norm, self.precision),
                "checkpoint": {"load_universal": self._universal},
            },
        )
        self.model = self.engine
        # The LR schedule and logging act on the torch optimizer DeepSpeed wraps.
        self.optimizer = optimizer

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.engine.module

    def align_batch(self, batch: Batch) -> Batch:
        if self.zero_stage != 3:
            return batch
        # The length is known on the host: agree on it over the gloo group, so the device
        # is neither synchronized nor given a collective per micro-batch.
        length = torch.tensor([batch.tgt_in.size(1)], dtype=torch.int64)
        torch.distributed.all_reduce(
            length, op=torch.distributed.ReduceOp.MAX, group=self._host_process_group()
        )
        return batch.with_target_length(int(length))

    def eval_model(self) -> torch.nn.Module:
        if self.zero_stage != 3:
            return self.unwrapped_model
        import deepspeed

        params = dict(self.engine.module.named_parameters())
        with deepspeed.zero.GatheredParameters(list(params.values())), torch.no_grad():
            for name, replica_param in self._replica.named_parameters():
                replica_param.copy_(params[name])
        return self._replica

    def backward(self, loss: torch.Tensor) -> None:
        if self.zero_stage > 0 and not self.engine.inside_no_sync_ctxt:
            self._pending_reduction.enter_context(self.engine.coalesce_grad_reduction())
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> Optional[torch.Tensor]:
        self._pending_reduction.close()  # reduces the group's gradients, in parameter order
        self.engine.step()
        norm = self.engine.get_global_grad_norm()  # a float or a tensor, by ZeRO stage
        return None if norm is None else torch.as_tensor(norm)

    def save_state(self, folder: Path, asynchronous: bool = False) -> None:
        # DeepSpeed's own format: each rank writes its ZeRO partition of the optimizer.
        # Always synchronous (config validation refuses checkpoint.async_save here).
        self._pending_reduction.close()
        self.engine.save_checkpoint(str(folder), tag=DEEPSPEED_TAG, save_latest=False)

    def prepare_resume(self, folder: Path, saved_world_size: int) -> None:
        """ZeRO partitions are per rank: at another world size, convert the checkpoint
        to DeepSpeed's universal format (once, kept beside the original) and load that."""
        if saved_world_size == self.topology.world_size:
            return
        self._universal = True
        if self.is_main:
            convert_to_universal(folder)
        self.barrier()

    def load_state(self, folder: Path) -> None:
        if self._universal:
            folder = folder / UNIVERSAL
        loaded, _ = self.engine.load_checkpoint(
            str(folder),
            tag=DEEPSPEED_TAG,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,  # our scheduler is restored with the trainer
        )
        if loaded is None:
            raise UserError(
                f"{folder} holds no DeepSpeed state: resume a strategy=deepspeed run from a "
                "checkpoint that strategy=deepspeed wrote."
            )



def skip_shared_memory_op() -> None:
    """Keep DeepSpeed from JIT-building its CPU shared-memory all-reduce (deepspeed_shm_comm).

    Only inference's tensor parallelism uses that op; training reduces over gloo. Its first
    build on a machine takes minutes, and a start killed during it leaves torch's extension
    lock, a file with no owner on which every later DeepSpeed start waits forever, silently.
    Marked incompatible, the op is never built and its lock never read.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def convert_to_universal(state: Path) -> Path:
    """state/universal/ from state/zero/ with DeepSpeed's converter (stages 1 and 2 need
    --inject_missing_state); written to a scratch name and renamed, so an interrupted
    conversion is redone next time."""
    target = state / UNIVERSAL
    if target.is_dir():
        return target
    scratch = state / f".{UNIVERSAL}.incomplete"
    shutil.rmtree(scratch, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "deepspeed.checkpoint.ds_to_universal",
        "--input_folder",
        str(state / DEEPSPEED_TAG),
        "--output_folder",
        str(scratch / DEEPSPEED_TAG),
        "--inject_missing_state",
    ]
    log.info("converting %s to a universal checkpoint for a new world size", state)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(
            f"converting {state} to DeepSpeed's universal format failed: "
            f"{done.stderr.strip()[-2000:]}\nResume at the world size that wrote it."
        )
    os.replace(scratch, target)
    return target
