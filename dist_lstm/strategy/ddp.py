"""PyTorch DistributedDataParallel: one process per device, gradients all-reduced.

Launched by torchrun (one node or many), the DeepSpeed launcher or srun + torchrun; the
process group is read from the environment (env://). A plain process is a world of 1 on
a loopback rendezvous. CPU ranks use gloo, GPU ranks NCCL.
"""

from __future__ import annotations

import gc
import logging
from contextlib import nullcontext
from datetime import timedelta
from typing import Any, ContextManager, List, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dist_lstm.config.schema import DDPStrategyConfig
from dist_lstm.strategy.base import Strategy
from dist_lstm.strategy.comm_hooks import CommHook, check_comm_hook, register_comm_hook
from dist_lstm.topology import Topology, loopback_rendezvous

log = logging.getLogger(__name__)


def default_backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def elastic_store(topology: Topology, timeout_s: float) -> Optional[dist.Store]:
    """Under torchrun sharing its agent's store, that store with a key prefix of this
    attempt; otherwise None, for the default env:// initialization.

    After `torchrun --max-restarts` restarts the workers, the agent's store still holds
    the previous attempt's keys, and a plain re-initialization hung or failed (measured:
    4 of 5 restarts). Keys under a prefix of the restart count start clean. Without a
    shared store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, which a node that rejoins needs)
    rank 0 hosts a new store on a new port every rendezvous round, and the restart counts
    of the nodes differ after a node was replaced, so no prefix may be used.
    """
    if topology.restart_attempt is None or not topology.agent_hosts_store:
        return None
    store = dist.TCPStore(
        topology.master_addr,
        topology.master_port,
        topology.world_size,
        is_master=False,
        timeout=timedelta(seconds=timeout_s),
    )
    return dist.PrefixStore(f"dist_lstm/attempt_{topology.restart_attempt}", store)


def init_process_group(topology: Topology, backend: str, timeout_s: float) -> None:
    """Join the job's process group (idempotent). A collective that waits longer than
    `timeout_s` raises instead of hanging, so one failed rank ends the whole job."""
    if dist.is_initialized():
        return
    backend = default_backend(topology.device) if backend == "auto" else backend
    if topology.device.type == "cuda":
        torch.cuda.set_device(topology.device)
    init_method = None  # env://, where the launcher exported MASTER_ADDR/MASTER_PORT
    if topology.master_addr is None:  # a plain process: a world of 1 on this machine
        topology = loopback_rendezvous(topology)
        init_method = f"tcp://{topology.master_addr}:{topology.master_port}"
    dist.init_process_group(
        backend=backend,
        init_method=init_method,
        rank=topology.rank,
        world_size=topology.world_size,
        timeout=timedelta(seconds=timeout_s),
        store=elastic_store(topology, timeout_s),
        # NCCL binds its communicator to this rank's GPU at once, not at a first guess
        device_id=topology.device if backend == "nccl" else None,
    )
    log.info("process group: %s, rank %d of %d", backend, topology.rank, topology.world_size)


class CollectivesMixin:
    """Metric reductions and object exchange over the default process group."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        moved = tensor.to(self.device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return moved.to(tensor.device)

    def host_sum(self, values: List[float]) -> List[float]:
        summed = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=self._host_process_group())
        return summed.tolist()

    def _host_process_group(self) -> Optional[dist.ProcessGroup]:
        """The default group when it is gloo already, else a gloo group made on first
        use (collective: every rank polls at the same step)."""
        if dist.get_backend() == "gloo":
            return None
        if self._host_group is None:
            self._host_group = dist.new_group(backend="gloo")
        return self._host_group

    def gather_objects(self, obj: Any) -> List[Any]:
        gathered: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def teardown(self) -> None:
        """Drop the wrapped model before the process group. Otherwise DDP's reducer may be
        the group's last owner: its destructor then joins gloo's worker threads while
        holding the GIL, which a worker needs to release a finished collective's tensor
        (a deadlock at exit, seen once in a restarted torchrun job). Destroying a group
        that is still registered shuts its threads down with the GIL released."""
        self.model = None
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()


class DDPStrategy(CollectivesMixin, Strategy):
    def __init__(self, topology: Topology, config: DDPStrategyConfig):
        super().__init__(topology, config)
        self.timeout_s = config.timeout_s
        self.find_unused_parameters = config.find_unused_parameters
        self.comm_hook = CommHook(
            config.comm_hook, config.powersgd_rank, config.powersgd_start_step
        )
        self.bucket_cap_mb = config.bucket_cap_mb
        check_comm_hook(self.comm_hook.name, topology.device)  # before waiting for the others
        init_process_group(topology, config.backend, config.timeout_s)

    def wrap(self, model: torch.nn.Module, optimizer_factory) -> None:
        model = model.to(self.device)
        self.model = DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.find_unused_parameters,
            bucket_cap_mb=self.bucket_cap_mb,  # None: DDP's 25 MiB, the first bucket 1 MiB
            # Gradients live in the all-reduce buckets: no copy into them and back, and
            # one gradient-sized buffer less.
            gradient_as_bucket_view=True,
        )
        if self.comm_hook.name != "none":
            self.comm_hook_state = register_comm_hook(self.model, self.comm_hook)
            log.info("gradient communication: %s (torch ddp_comm_hooks)", self.comm_hook.name)
        self.optimizer = optimizer_factory(self.model.module)

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.model.module

    def gradient_sync(self, enabled: bool) -> ContextManager:
        # DDP decides at forward time whether backward all-reduces: skip it while
        # accumulating, so gradients cross the network once per optimizer step.
        return nullcontext() if enabled else self.model.no_sync()
