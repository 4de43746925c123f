"""How DDP's gradients cross the network (`strategy.comm_hook`): torch's maintained
communication hooks, and PowerSGD's state as a checkpoint part that resumes bitwise.

- none: fp32 all-reduce (DDP's own).
- fp16 / bf16: each bucket cast to 16 bits for the all-reduce (half the bytes); stateless.
- powersgd: each gradient matrix sent as a rank-r product P Q^T, after
  `strategy.powersgd_start_step` steps of plain all-reduce. It keeps error feedback (what
  compression lost, added to the next step's gradient: different on every rank), the
  previous step's Q (warm start), a step counter and a NumPy generator.

Why the state is saved per parameter: torch keeps PowerSGD's tensors per DDP bucket
index, and the buckets change. Every DDP model, a fresh run's and a resumed run's alike,
reduces its first step in one bucket holding every parameter, then rebuilds its buckets
in the order gradients became ready. A resumed run would meet the saved tensors in
another layout for that one step. So they are saved by parameter name and cut to fit
whatever bucket DDP presents next (`_fit_to`), which keeps the arithmetic of every
parameter unchanged, and a resumed run equal to an unbroken one.
"""

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import (
    PowerSGDState,
    _should_compress,
    powerSGD_hook,
)
from torch.nn.parallel import DistributedDataParallel

from dist_lstm.errors import ConfigError

log = logging.getLogger(__name__)

# PowerSGD's per-bucket tensors, by the name they are saved under: its error feedback
# and its two low-rank factors (P is recomputed from Q each step, but saved all the same).
KINDS = ("error", "p", "q")

Pieces = Dict[str, List[Tuple[str, int]]]  # kind -> (parameter name, length) in flat order


@dataclass(frozen=True)
class CommHook:
    """strategy.comm_hook and PowerSGD's keys (defaults: DDPStrategyConfig)."""

    name: str
    powersgd_rank: int
    powersgd_start_step: int


def check_comm_hook(hook: str, device: torch.device) -> None:
    """Refuse at start-up, before the rendezvous, a hook this machine cannot run.

    torch registers its bf16 hook only in a CUDA (or ROCm) build with NCCL >= 2.10, a
    check of its own made by the hook's name, even for gloo; and GPUs before compute
    capability 8.0 have no bfloat16.
    """
    if hook != "bf16":
        return
    fix = "use strategy.comm_hook=fp16, which sends the same 2 bytes per gradient."
    gpu_build = torch.version.cuda is not None or torch.version.hip is not None
    nccl = torch.cuda.nccl.version() if gpu_build and dist.is_nccl_available() else None
    if nccl is None or nccl < (2, 10):
        found = "NCCL " + ".".join(map(str, nccl)) if nccl else "a build without NCCL"
        raise ConfigError(
            f"strategy.comm_hook='bf16' is invalid here: torch's bf16 hook needs a CUDA build "
            f"of PyTorch with NCCL >= 2.10 (this one: {found}); {fix}"
        )
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        raise ConfigError(
            f"strategy.comm_hook='bf16' is invalid on this GPU (compute capability "
            f"{capability}, bfloat16 needs 8.0); {fix}"
        )


def register_comm_hook(
    model: DistributedDataParallel, hook: CommHook
) -> Optional["PowerSGDCompression"]:
    """Install `hook` on `model` (before its first backward); returns PowerSGD's state,
    the only hook with any (None otherwise)."""
    if hook.name == "fp16":
        model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif hook.name == "bf16":
        model.register_comm_hook(None, default_hooks.bf16_compress_hook)
    elif hook.name == "powersgd":
        compression = PowerSGDCompression(
            model.module,
            dist.get_world_size(),
            hook.powersgd_rank,
            hook.powersgd_start_step,
            one_bucket_at_a_time=dist.get_backend() == "gloo",
        )
        model.register_comm_hook(compression.state, compression.hook)
        return compression
    return None


def _matrix_shape(shape: torch.Size) -> Tuple[int, int]:
    """The matrix PowerSGD views a gradient as: its first dimension by all the others."""
    return shape[0], shape.numel() // shape[0]


class PowerSGDCompression:
    """torch's PowerSGD hook, with its state a per-rank checkpoint part (state_dict,
    load_state_dict, start_fresh: see dist_lstm/checkpoint/manager.py)."""

    def __init__(
        self,
        module: torch.nn.Module,
        world_size: int,
        rank: int,
        start_step: int,
        one_bucket_at_a_time: bool = False,
    ):
        self.world_size = world_size
        # Under gloo, torch's compressing hook deadlocks when buckets overlap (a world of
        # 1 with 8 buckets hung within 11-41 steps, 5 times of 5): each bucket's callbacks
        # wait for further all-reduces while holding one of gloo's two worker threads.
        # There a compressed bucket starts only when the one before it is done.
        self.one_bucket_at_a_time = one_bucket_at_a_time
        self._previous: Optional[torch.futures.Future] = None
        # Defaults otherwise: error feedback and warm start on, as torch advises.
        self.state = PowerSGDState(
            process_group=None, matrix_approximation_rank=rank, start_powerSGD_iter=start_step
        )
        self._names = {id(p): name for name, p in module.named_parameters()}
        self._shapes = {name: p.shape for name, p in module.named_parameters()}
        # bucket index -> names of its parameters, in the layout the tensors are in
        self._layout: Dict[int, Tuple[str, ...]] = {}
        # state of parameters not in any bucket's tensors now: name -> kind -> tensor
        self._loose: Dict[str, Dict[str, torch.Tensor]] = {}
        self._reduced: Set[int] = set()  # buckets already reduced in this step

    # --------------------------------------------------------------- the hook
    def hook(
        self, state: PowerSGDState, bucket: dist.GradBucket
    ) -> torch.futures.Future[torch.Tensor]:
        """DDP's hook for one bucket: fit the state to the bucket, then torch's PowerSGD."""
        self._fit_to(bucket)
        self._reduced.add(bucket.index())
        if bucket.is_last():
            self._reduced.clear()
        if self._previous is not None:
            self._previous.wait()
        compressing = state.iter >= state.start_powerSGD_iter  # torch's own test
        future = powerSGD_hook(state, bucket)
        keep = self.one_bucket_at_a_time and compressing and not bucket.is_last()
        self._previous = future if keep else None
        return future

    def _fit_to(self, bucket: dist.GradBucket) -> None:
        """Make the state of `bucket`'s index the state of its parameters.

        A bucket whose parameters differ from those its index held last time means a new
        layout (DDP rebuilt its buckets, or the state was just loaded): every bucket not
        yet reduced in this step is taken apart by parameter, and this one assembled.
        """
        index = bucket.index()
        names = tuple(self._names[id(p)] for p in bucket.parameters())
        if self._layout.get(index) == names:
            return
        for stale in [i for i in self._layout if i not in self._reduced]:
            self._take_apart(stale)
        self._layout[index] = names
        self._assemble(index, names, bucket.buffer())

    def _tensors(self, kind: str) -> Dict[int, torch.Tensor]:
        return {
            "error": self.state.error_dict,
            "p": self.state.p_memory_dict,
            "q": self.state.q_memory_dict,
        }[kind]

    def _pieces(self, names: Tuple[str, ...]) -> Pieces:
        """Where each parameter lies in a bucket's flat tensors, as torch's hook lays them
        out: the error like the gradients; P and Q only for the matrices it compresses,
        grouped by matrix shape (in order of first appearance)."""
        rank = self.state.matrix_approximation_rank
        by_shape: Dict[Tuple[int, int], List[str]] = {}
        for name in names:
            rows, cols = _matrix_shape(self._shapes[name])
            worth, _, _ = _should_compress(
                rows, cols, min(rows, cols, rank), self.state.min_compression_rate
            )
            if worth:
                by_shape.setdefault((rows, cols), []).append(name)
        pieces: Pieces = {"error": [(n, self._shapes[n].numel()) for n in names], "p": [], "q": []}
        for (rows, cols), group in by_shape.items():
            r = min(rows, cols, rank)
            pieces["p"] += [(name, rows * r) for name in group]
            pieces["q"] += [(name, cols * r) for name in group]
        return pieces

    def _split(self, index: int) -> Dict[str, Dict[str, torch.Tensor]]:
        """Bucket `index`'s tensors as views, by parameter name and kind."""
        parts: Dict[str, Dict[str, torch.Tensor]] = {}
        for kind, pieces in self._pieces(self._layout[index]).items():
            flat = self._tensors(kind).get(index)
            if flat is None:  # not compressed yet
                continue
            lengths = [length for _, length in pieces]
            if flat.numel() != sum(lengths):  # torch changed its layout: never guess
                raise RuntimeError(
                    f"PowerSGD's {kind} tensor of bucket {index} holds {flat.numel()} values, "
                    f"not the {sum(lengths)} its parameters need; this torch version lays "
                    "out PowerSGD's state differently from what dist-lstm expects."
                )
            for (name, _), piece in zip(pieces, flat.split(lengths)):
                parts.setdefault(name, {})[kind] = piece
        return parts

    def _take_apart(self, index: int) -> None:
        self._loose.update(self._split(index))
        for kind in KINDS:
            self._tensors(kind).pop(index, None)
        del self._layout[index]

    def _assemble(self, index: int, names: Tuple[str, ...], buffer: torch.Tensor) -> None:
        """Bucket `index`'s tensors from its parameters' loose state, if they have any.

        A bucket is all compressed before or none of it: its P and Q exist (possibly
        empty) exactly when it was, and their presence is what spares torch's hook from
        drawing new random projections.
        """
        found = [name for name in names if name in self._loose]
        if not found:
            return
        if len(found) != len(names):
            raise RuntimeError(
                f"PowerSGD state exists for {len(found)} of the {len(names)} parameters of "
                f"bucket {index}: buckets are expected to be compressed together."
            )
        for kind, pieces in self._pieces(names).items():
            parts = [self._loose[name][kind] for name, _ in pieces]
            flat = torch.cat(parts) if parts else buffer.new_empty(0)
            self._tensors(kind)[index] = flat.to(device=buffer.device, dtype=buffer.dtype)
        for name in names:
            del self._loose[name]

    # ---------------------------------------------------------- checkpointing
    def state_dict(self) -> Dict[str, Any]:
        """Everything PowerSGD carries from step to step, per parameter; copies (a view
        would save its whole bucket's tensor)."""
        parameters = {name: dict(kinds) for name, kinds in self._loose.items()}
        for index in self._layout:
            parameters.update(self._split(index))
        kind, keys, position, has_gauss, cached = self.state.rng.get_state()
        return {
            "world_size": self.world_size,
            "matrix_rank": self.state.matrix_approximation_rank,
            "iter": self.state.iter,
            "rng": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
            "stats": [
                self.state.total_numel_before_compression,
                self.state.total_numel_after_compression,
                self.state.next_stats_report,
            ],
            "parameters": {
                name: {kind: t.detach().to("cpu", copy=True) for kind, t in kinds.items()}
                for name, kinds in parameters.items()
            },
        }

    def load_state_dict(self, saved: Dict[str, Any]) -> None:
        """Continue from `saved` exactly; at another world size or rank, restart instead."""
        if saved["world_size"] != self.world_size:
            self._restart(
                saved["iter"],
                f"the checkpoint was written by {saved['world_size']} ranks, this run has "
                f"{self.world_size}, and error feedback belongs to one rank",
            )
            return
        if saved["matrix_rank"] != self.state.matrix_approximation_rank:
            self._restart(
                saved["iter"],
                f"the checkpoint was written with strategy.powersgd_rank="
                f"{saved['matrix_rank']}, this run has "
                f"{self.state.matrix_approximation_rank}",
            )
            return
        self._forget()
        self.state.iter = saved["iter"]
        kind, keys, position, has_gauss, cached = saved["rng"]
        keys = keys.numpy().astype(np.uint32)
        self.state.rng.set_state((kind, keys, position, has_gauss, cached))
        (
            self.state.total_numel_before_compression,
            self.state.total_numel_after_compression,
            self.state.next_stats_report,
        ) = saved["stats"]
        self._loose = {name: dict(kinds) for name, kinds in saved["parameters"].items()}

    def start_fresh(self, step: int) -> None:
        """This rank has nothing in the checkpoint (written without PowerSGD, or by fewer
        ranks)."""
        self._restart(step, "the checkpoint holds no PowerSGD state for this rank")

    def _restart(self, step: int, reason: str) -> None:
        """Zero error feedback and new projections from `step` on, the same on every rank
        (each rank takes this path when one does: the checkpoint's world size, rank or
        presence of this part differs for all of them alike). A saved counter equals the
        checkpoint's step, so ranks with a file and ranks without agree: the hook counts
        one synchronized backward, and the trainer one optimizer step, per step."""
        self._forget()
        self.state.iter = step
        self.state.rng = np.random.RandomState(step)
        log.warning(
            "PowerSGD: %s; its compression state starts afresh at step %d (zero error "
            "feedback, new random projections), so this run no longer follows an unbroken "
            "one exactly.",
            reason,
            step,
        )

    def _forget(self) -> None:
        for kind in KINDS:
            self._tensors(kind).clear()
        self._layout.clear()
        self._loose.clear()
        self._reduced.clear()
