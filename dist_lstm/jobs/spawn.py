"""Run one training job as N local processes, started from inside Python.

`launcher.nproc_per_node=2` turns a plain `python train.py` -- and every job of a Hydra
multirun sweep -- into a 2-process DDP or DeepSpeed job without torchrun. The workers are
started by torch.distributed's elastic launch API (the engine behind torchrun): c10d
rendezvous on a free local port, a run id of their own, `spawn` start method.

Each job's process group lives and dies with its own worker processes. Re-initialising a
group for every job inside one long-lived process is fragile (measured: 3 of 4 attempts
failed), and a failed job must not poison the next one.

Workers are fresh interpreters where Hydra is not running, so the job's directory and its
config travel as arguments, and logging is set up here the way Hydra sets it up for a job.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

from dist_lstm.config.resolvers import log_file_name
from dist_lstm.errors import UserError
from dist_lstm.logging.run_dir import quiet_console
from dist_lstm.topology import free_local_port
from dist_lstm.train.signals import exit_status

log = logging.getLogger(__name__)

FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def launch_local_workers(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    """Train `cfg` in `cfg.launcher.nproc_per_node` new processes; rank 0's result."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nproc = cfg.launcher.nproc_per_node
    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"dist-lstm-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_local_port()}",
        max_restarts=cfg.launcher.max_restarts,
        start_method="spawn",
        monitor_interval=0.5,
    )
    config = OmegaConf.to_container(cfg, resolve=False)
    log.info("starting %d worker processes (run id %s)", nproc, launch.run_id)
    try:
        results = elastic_launch(launch, run_worker)(config, str(run_dir), nproc)
    except ChildFailedError as failed:
        raise_for_failed_workers(failed, run_dir)
    except SignalException as stopped:
        # SIGTERM/SIGINT reached this process: the launch API passed it on to the workers,
        # which checkpointed and exited. Stop as they did (and a sweep with them).
        log.warning("stopped by %s; resume=auto continues this job", stopped.sigval.name)
        sys.exit(exit_status(stopped.sigval))
    return results[0]


def raise_for_failed_workers(failed: Any, run_dir: Path) -> None:
    """One message for a failed worker group: which rank, its exit status, where its log
    is. A group stopped by a signal exits with the workers' status (128 + signal), as a
    torchrun job would, so a sweep stops too and resume=auto continues later."""
    rank, failure = min(failed.failures.items())
    if failure.exitcode > 128:
        sys.exit(failure.exitcode)
    raise UserError(
        f"worker rank {rank} of the job exited with status {failure.exitcode}; its messages "
        f"are above and in {run_dir / log_file_name(rank)}."
    )


def run_worker(config: Dict[str, Any], run_dir: str, nproc: int) -> Dict[str, Any]:
    """Entry point of one worker process (module level, so `spawn` can import it)."""
    from dist_lstm.config import register_configs
    from dist_lstm.config.schema import typed_config
    from dist_lstm.exit_policy import user_errors
    from dist_lstm.topology import launcher_rank
    from dist_lstm.train.run import train

    register_configs()
    rank = launcher_rank()
    configure_worker_logging(Path(run_dir), rank)
    share_cpu_threads(nproc)
    cfg = typed_config(config)
    with user_errors():
        return train(cfg, Path(run_dir))


def configure_worker_logging(run_dir: Path, rank: int) -> None:
    """As conf/hydra/job_logging/rich.yaml does for a job: console through rich (rank 0;
    other ranks only warnings, tagged) and train.log / train.rank<N>.log in the job's
    directory (rank 0 appends to the log its parent process started)."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    console = RichHandler(show_path=False)
    if rank > 0:
        quiet_console(console, rank)
    log_file = logging.FileHandler(run_dir / log_file_name(rank))
    log_file.setFormatter(logging.Formatter(FILE_FORMAT))
    root.handlers = [console, log_file]


def share_cpu_threads(nproc: int) -> None:
    """Split the CPU's cores between the workers unless OMP_NUM_THREADS says otherwise
    (torchrun would set 1); N workers x all cores each would oversubscribe the CPU."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
