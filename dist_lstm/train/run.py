"""`train(cfg)`: build every part of a run in order and hand them to the Trainer.

Launch example (see README.md for more):
    python train.py experiment=smoke
"""

from __future__ import annotations

import logging
import random
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dist_lstm.batch import PAD_ID
from dist_lstm.checkpoint import CheckpointManager
from dist_lstm.checkpoint.metadata import library_versions, run_metadata
from dist_lstm.checkpoint.policy import SavePolicy
from dist_lstm.checkpoint.resume import find_resume
from dist_lstm.checkpoint.rng import RNGState
from dist_lstm.config import validate_config
from dist_lstm.config.schema import OptimConfig, TrainerConfig
from dist_lstm.data.build import build_data, make_eval_loader, make_train_loader
from dist_lstm.data.corpus import ParallelText
from dist_lstm.errors import UserError
from dist_lstm.evaluation import monitor_mode, sacrebleu_scores
from dist_lstm.logging.metrics import MetricsWriter, plot_losses
from dist_lstm.logging.run_dir import adopt_main_run_dir
from dist_lstm.logging.run_lock import RunDirectoryClaim
from dist_lstm.logging.wandb import WandbLogger
from dist_lstm.model import build_model
from dist_lstm.precision import configure_tf32
from dist_lstm.strategy import Strategy, build_strategy
from dist_lstm.topology import (
    from_environment,
    job_identity,
)
from dist_lstm.train.optim import build_optimizer, build_schedule
from dist_lstm.train.signals import exit_status, stop_with_launcher
from dist_lstm.train.trainer import Trainer
from dist_lstm.translate.inference import SearchOptions, Translator, load_model

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed every global RNG (python, numpy, torch); data order has its own generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def current_run_dir() -> Path:
    """Hydra's output directory for this job, or the working directory outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def train(cfg: DictConfig, run_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Train a model as `cfg` says; return the final metrics (also in metrics.jsonl).

    Every rank of a distributed job runs this same function.
    """
    validate_config(cfg)
    topology = from_environment(cfg.trainer.device)
    if topology.distributed:
        stop_with_launcher()
    # Below this point code takes each group as its schema dataclass (typed attributes);
    # the DictConfig stays for what is saved as the run's config.
    strategy = build_strategy(OmegaConf.to_object(cfg.strategy), topology)
    try:
        return _train(cfg, strategy, run_dir)
    finally:
        strategy.teardown()


def _train(cfg: DictConfig, strategy: Strategy, run_dir: Optional[Path]) -> Dict[str, Any]:
    own_dir = Path(run_dir or current_run_dir())
    run_dir = Path(strategy.broadcast_object(str(own_dir.resolve())))
    adopt_main_run_dir(own_dir, run_dir, strategy.topology.rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    with claimed(run_dir, strategy) as claim:
        return _train_in(cfg, strategy, run_dir, claim)


@contextmanager
def claimed(run_dir: Path, strategy: Strategy) -> Iterator[Optional[RunDirectoryClaim]]:
    """Rank 0 claims the run directory for this job (logging/run_lock.py) before anything
    is written there; a directory another live job writes stops every rank, naming it."""
    claim = RunDirectoryClaim(run_dir, job_identity()) if strategy.is_main else None
    refusal = None
    if claim is not None:
        try:
            claim.claim()
        except UserError as exc:
            refusal = str(exc)
    refusal = strategy.broadcast_object(refusal)
    if refusal is not None:
        raise UserError(refusal)
    if claim is not None:
        claim.start_heartbeat()
    try:
        yield claim
    finally:
        if claim is not None:
            claim.release()


def _train_in(
    cfg: DictConfig, strategy: Strategy, run_dir: Path, claim: Optional[RunDirectoryClaim]
) -> Dict[str, Any]:
    seed_everything(cfg.seed)
    topology = strategy.topology
    tf32 = configure_tf32(cfg.trainer.tf32, topology.device)
    log.info(  # CPU threads: speed and exact results depend on them
        "run directory: %s | %s on %s, world size %d, %d CPU threads, precision %s%s",
        run_dir,
        type(strategy).__name__,
        topology.device,
        topology.world_size,
        torch.get_num_threads(),
        strategy.precision,  # as used, DeepSpeed's engine included
        ", TF32 products" if tf32 else "",
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    checkpoints = CheckpointManager(
        run_dir,
        cfg.checkpoint.keep_last,
        strategy.is_main,
        strategy.barrier,
        rank=topology.rank,
        asynchronous=cfg.checkpoint.async_save,
    )
    resume_from, resume_meta = find_resume(cfg.resume, checkpoints, resolved, strategy)
    data = build_data(
        OmegaConf.to_object(cfg.data),
        prepares=topology.local_rank == 0,  # one process per node writes the token files
        wait_s=strategy.timeout_s,  # None for one process, which prepares itself
    )
    check_same_tokenizer(data.tokenizer.fingerprint, strategy)
    if strategy.is_main:
        data.tokenizer.save(run_dir / "tokenizer")
    model = build_model(
        cfg.model, data.tokenizer.src_vocab_size, data.tokenizer.tgt_vocab_size, PAD_ID
    )
    log.info("model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    optim: OptimConfig = OmegaConf.to_object(cfg.optim)
    strategy.wrap(model, lambda m: build_optimizer(m, optim))
    schedule = build_schedule(
        strategy.optimizer, optim, cfg.trainer.max_steps, monitor_mode(cfg.trainer.monitor)
    )
    max_tokens = cfg.data.max_tokens
    train_loader = make_train_loader(
        data.train, max_tokens, cfg.seed, topology.rank, topology.world_size, data.train_shares
    )
    valid_loader = make_eval_loader(data.valid, max_tokens, topology.rank, topology.world_size)
    wandb_logger = None
    if strategy.is_main:
        wandb_logger = WandbLogger(
            cfg.logger.wandb,
            run_dir,
            {
                **resolved,
                "world_size": topology.world_size,
                "precision": strategy.precision,
                "versions": library_versions(),
            },
            run_id=resume_meta.get("wandb_run_id"),
        )
    metrics = MetricsWriter(run_dir / "metrics.jsonl", wandb_logger)
    trainer = Trainer(
        OmegaConf.to_object(cfg.trainer),
        strategy,
        schedule,
        train_loader,
        valid_loader,
        data.valid.references,
        data.tokenizer,
        checkpoints,
        SavePolicy(cfg.checkpoint.every_steps, cfg.checkpoint.every_minutes),
        metrics,
    )
    checkpoints.run_metadata = run_metadata(
        resolved,
        OmegaConf.to_container(cfg.data, resolve=False),
        data.tokenizer.payload,
        wandb_logger.run_id if wandb_logger else None,
        strategy.precision,
    )
    register_training_state(checkpoints, trainer, strategy, cfg.seed)
    if claim is not None:  # a job started meanwhile waits for this one's last checkpoint
        trainer.stop_request.add_listener(lambda _signum: claim.mark_stopping())
    try:
        return fit_and_report(cfg, trainer, resume_from, data.test, run_dir)
    finally:
        if wandb_logger is not None:
            wandb_logger.finish()


def check_same_tokenizer(fingerprint: str, strategy: Strategy) -> None:
    """Nodes without a shared disk prepare their own copy of the data: every rank must
    have ended up with rank 0's tokenizer."""
    main = strategy.broadcast_object(fingerprint)
    if main != fingerprint:
        raise UserError(
            f"rank {strategy.topology.rank} prepared its data with another tokenizer than "
            "rank 0 (nodes trained SentencePiece separately): put data.cache_dir or "
            "data.prepared_dir on a disk every node shares, or copy rank 0's prepared folder."
        )


def register_training_state(
    checkpoints: CheckpointManager, trainer: Trainer, strategy: Strategy, seed: int
) -> None:
    """Every part a checkpoint holds, by name; new state is one more line here."""
    checkpoints.register_model_state(strategy)  # model and optimizer, in its format
    checkpoints.register("trainer", trainer.state)
    checkpoints.register("sampler", trainer.train_loader.batch_sampler)
    checkpoints.register("schedule", trainer.schedule)
    checkpoints.register("best", trainer.best)
    if strategy.scaler is not None:
        checkpoints.register("grad_scaler", strategy.scaler)
    checkpoints.register_per_rank("rng", RNGState(seed, strategy.topology.rank))
    checkpoints.register_per_rank("loss_window", trainer.window)
    if strategy.comm_hook_state is not None:  # PowerSGD's error feedback differs per rank
        checkpoints.register_per_rank("comm_hook", strategy.comm_hook_state)


def fit_and_report(
    cfg: DictConfig,
    trainer: Trainer,
    resume_from: Optional[Path],
    test: Optional[ParallelText],
    run_dir: Path,
) -> Dict[str, Any]:
    """Resume if asked, train, then test the best checkpoint and draw the loss plot."""
    strategy = trainer.strategy
    if resume_from is not None:
        trainer.resumed_at(trainer.checkpoints.load(resume_from))
        if strategy.is_main:
            trainer.metrics.drop_after(trainer.state.step)  # the steps being redone
            log.info(
                "resumed from %s: step %d, epoch %d",
                resume_from,
                trainer.state.step,
                trainer.state.epoch,
            )
    elif cfg.resume == "auto" and strategy.is_main:
        log.info(
            "resume=auto: no checkpoint in %s yet, starting fresh", trainer.checkpoints.directory
        )
    with trainer.stop_request:
        state = trainer.fit()
    if state.stop_signal is not None:
        stop_for_signal(state.stop_signal, state.step, strategy)
    bleus = [record["val_bleu"] for record in state.history if "val_bleu" in record]
    result: Dict[str, Any] = {
        "step": state.step,
        "best_val_bleu": max(bleus) if bleus else None,
        "best_" + trainer.cfg.monitor: trainer.best.best,
    }
    if state.history:
        result.update(state.history[-1])
    if test is not None and strategy.is_main:
        result.update(
            test_best_model(
                trainer.cfg,
                test,
                trainer.checkpoints.named("best"),
                strategy.device,
                strategy.precision,
            )
        )
        trainer.metrics.write(
            {"step": state.step, **{k: v for k, v in result.items() if k.startswith("test_")}}
        )
    if trainer.metrics.sink is not None:  # W&B's run summary: best and test scores
        trainer.metrics.sink.summarize(
            {k: v for k, v in result.items() if k.startswith(("best_", "test_"))}
        )
    if strategy.is_main:
        plot_losses(trainer.metrics.path, run_dir / "loss.png")
        log.info("outputs in %s: metrics.jsonl, loss.png, checkpoints/, tokenizer/", run_dir)
    strategy.barrier()
    return result


def stop_for_signal(signum: int, step: int, strategy: Strategy) -> None:
    """The checkpoint is written: skip the final test and exit with 128 + signum."""
    if strategy.is_main:
        log.warning(
            "stopped by %s at step %d; the checkpoint is complete. Continue with resume=auto "
            "(same hydra.run.dir). Exit status %d.",
            signal.Signals(signum).name,
            step,
            exit_status(signum),
        )
    strategy.barrier()
    sys.exit(exit_status(signum))


def test_best_model(
    trainer: TrainerConfig,
    test: ParallelText,
    best_path: Path,
    device: torch.device,
    precision: str,
) -> Dict[str, float]:
    """Decode the test split with the best checkpoint as validation decodes: its beam, in
    the run's `precision` (autocast; the loaded weights are fp32); sacreBLEU."""
    best = load_model(best_path, device)
    options = SearchOptions(
        beam=trainer.val_beam,
        max_len_a=trainer.decode_max_len_a,
        max_len_b=trainer.decode_max_len_b,
        precision=precision,
    )
    scores = sacrebleu_scores(Translator(best, options).translate(test.src), test.tgt)
    log.info(
        "test (best checkpoint, step %d, beam %d, precision %s): BLEU %.2f | chrF %.2f",
        best.step,
        options.beam,
        options.precision,
        scores["bleu"],
        scores["chrf"],
    )
    return {"test_bleu": scores["bleu"], "test_chrf": scores["chrf"], "test_step": best.step}
