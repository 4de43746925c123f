"""The strategy interface: how a model is placed, how gradients flow, how ranks talk.

The trainer holds one Strategy and never asks which kind it is. Single-process, DDP and
DeepSpeed runs differ only in the subclass that implements these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ContextManager, Dict, Iterator, List, Optional

import torch

from dist_lstm.batch import Batch
from dist_lstm.config.schema import StrategyConfig
from dist_lstm.errors import UserError
from dist_lstm.precision import autocast, check_precision, grad_scaler, limit_onednn_caches
from dist_lstm.strategy.formats import DCP_METADATA, MODEL_KEY, OPTIM_KEY
from dist_lstm.topology import Topology

# What gloo and NCCL say when a collective loses a rank whose process or node is gone.
_PEER_LOST_SIGNS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "remote process exited",
    "NCCL communicator was aborted",
)


def peer_lost(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because another rank of the job is gone,
    as opposed to a fault of this rank's own work."""
    if isinstance(exc, torch.distributed.DistNetworkError):
        return True
    return any(sign in str(exc) for sign in _PEER_LOST_SIGNS)


def resolve_precision(configured: str, device: torch.device) -> str:
    """The precision a run uses on `device`: `configured` (32, bf16, fp16) once the device
    is known to run LSTMs at it, else a ConfigError naming strategy.precision. oneDNN's
    caches are capped first, because the probe creates their first primitive."""
    limit_onednn_caches(configured, device)
    check_precision(configured, device)
    return configured


class Strategy(ABC):
    state_format = "dcp"  # what save_state writes (checkpoint/resume.py checks it)
    # Whether the backend's engine casts the model to the precision and scales fp16 losses
    # itself (DeepSpeed); then training adds no autocast or GradScaler of ours.
    engine_casts_model = False

    # How long a collective waits for the other ranks (strategy.timeout_s of the strategies
    # that have ranks to wait for); None for one process.
    timeout_s: Optional[float] = None

    def __init__(self, topology: Topology, config: StrategyConfig):
        """config: the `strategy` group as its option's schema; its keys' defaults are
        the schema's, written nowhere else."""
        self.topology = topology
        self.clip_grad_norm = config.clip_grad_norm
        # The precision used, whoever applies it: what the run logs and records.
        self.precision = resolve_precision(config.precision, topology.device)
        self.scaler = None if self.engine_casts_model else grad_scaler(self.precision, self.device)
        self.model: Optional[torch.nn.Module] = None  # what the trainer calls forward on
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self._async_group: Optional[Any] = None  # process group of asynchronous saves
        self._host_group: Optional[Any] = None  # gloo group of host_sum beside NCCL
        # State a gradient communication hook carries between steps, a per-rank checkpoint
        # part (DDP's PowerSGD: strategy/comm_hooks.py); None where there is none.
        self.comm_hook_state: Optional[Any] = None

    @property
    def device(self) -> torch.device:
        return self.topology.device

    @property
    def is_main(self) -> bool:
        return self.topology.is_main

    @abstractmethod
    def wrap(self, model: torch.nn.Module, optimizer_factory) -> None:
        """Place `model`, build its optimizer with `optimizer_factory(model)`, keep both."""

    @property
    @abstractmethod
    def unwrapped_model(self) -> torch.nn.Module:
        """The plain Seq2Seq, for search, evaluation and checkpoints (canonical keys)."""

    def eval_model(self) -> torch.nn.Module:
        """A module with the full current weights for validation decoding on this rank."""
        return self.unwrapped_model

    def align_batch(self, batch: Batch) -> Batch:
        """The batch as this backend needs it to run in step with the other ranks."""
        return batch

    def decoding_autocast(self) -> ContextManager:
        """Autocast at the run's precision, around validation and the final test: they
        decode in the precision the model trained in (none for 32). Under an engine that
        casts the model itself the weights are 16-bit already (ZeRO-2 bf16 validated to the
        same metrics as before); ZeRO-3's fp32 replica gets training's 16-bit products."""
        return autocast(self.precision, self.device)

    def training_autocast(self) -> ContextManager:
        """The autocast around a training forward: none where the engine casts the model."""
        return nullcontext() if self.engine_casts_model else self.decoding_autocast()

    @contextmanager
    def micro_batch(self, sync_gradients: bool) -> Iterator[None]:
        """Wraps one micro-batch's forward and backward: autocast at `precision`, and
        gradient synchronization only when `sync_gradients` (False for all but the last
        micro-batch of an accumulation group)."""
        with self.gradient_sync(sync_gradients), self.training_autocast():
            yield

    def gradient_sync(self, enabled: bool) -> ContextManager:
        """Backends that reduce gradients across ranks skip it while `enabled` is False."""
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate this micro-batch's gradients (loss-scaled under fp16)."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self) -> Optional[torch.Tensor]:
        """Clip, update the parameters, clear gradients; return the gradient norm if clipped.

        Under DDP the gradients are already identical on every rank, and so is the norm.
        The norm stays a device tensor (the trainer reads it at logging steps); only fp16's
        loss scaler waits for the device, to learn whether gradients overflowed.
        """
        norm = None
        if self.scaler:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
        if self.clip_grad_norm > 0:
            params = self.unwrapped_model.parameters()
            norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)  # skips the update if gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    @abstractmethod
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks (identity for one process)."""

    def host_sum(self, values: List[float]) -> List[float]:
        """Sum a few host-side numbers over ranks, for decisions all ranks take together
        (stop on a signal, time to save). Never touches the accelerator: under NCCL it
        runs on a gloo group of its own, so it does not wait for queued GPU work."""
        return list(values)

    @abstractmethod
    def gather_objects(self, obj: Any) -> List[Any]:
        """Every rank's `obj`, in rank order (a one-item list for one process)."""

    @abstractmethod
    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s `obj` on every rank (the object itself for one process)."""

    @abstractmethod
    def barrier(self) -> None:
        """Wait for all ranks."""

    def prepare_resume(self, folder: Path, saved_world_size: int) -> None:
        """Called before `wrap` when the run will resume from the state in `folder`.
        DCP reshards by itself on load, so nothing is needed here."""

    def save_state(self, folder: Path, asynchronous: bool = False) -> Optional[Future]:
        """Write model and optimizer under `folder`; collective.

        torch.distributed.checkpoint: each rank writes its own file, replicated tensors
        once, and the result loads at any world size (DCP reshards on load). With
        `asynchronous`, the state is copied and a Future returned while a thread writes;
        its collectives use a gloo group of their own (on the training group they hung
        while DDP trained: measured).
        """
        import torch.distributed.checkpoint as dcp

        state, no_dist = self._dcp_state(), not _distributed()
        if asynchronous:
            group = self._checkpoint_group()
            return dcp.async_save(
                state, checkpoint_id=str(folder), process_group=group, no_dist=no_dist
            )
        dcp.save(state, checkpoint_id=str(folder), no_dist=no_dist)
        return None

    def _checkpoint_group(self) -> Optional[Any]:
        if not _distributed():
            return None
        if self._async_group is None:  # collective: every rank saves at the same step
            self._async_group = torch.distributed.new_group(backend="gloo")
        return self._async_group

    def load_state(self, folder: Path) -> None:
        """Restore what `save_state` wrote, at this run's world size; collective."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        # DCP's index of the shards. Without it dcp.load logs a traceback of its own
        # before failing, so say what is wrong first.
        if not (folder / DCP_METADATA).is_file():
            raise UserError(
                f"resume: {folder.parent} is damaged: {folder / DCP_METADATA} (the index of "
                "its state files) is missing; resume from an earlier checkpoint with "
                "resume=PATH."
            )
        state = self._dcp_state()
        dcp.load(state, checkpoint_id=str(folder), no_dist=not _distributed())
        set_state_dict(
            self.unwrapped_model,
            self.optimizer,
            model_state_dict=state[MODEL_KEY],
            optim_state_dict=state[OPTIM_KEY],
        )

    def _dcp_state(self) -> Dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        # Canonical keys (no DDP "module." prefix); the optimizer's state is created
        # first if no step has run, so a load has every slot to fill.
        model_state, optim_state = get_state_dict(self.unwrapped_model, self.optimizer)
        return {MODEL_KEY: model_state, OPTIM_KEY: optim_state}

    def teardown(self) -> None:
        """Release process groups or engines; nothing to do for one process."""


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
