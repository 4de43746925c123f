"""The training loop: batches -> strategy backward/step -> log -> validate -> save request.

Everything it needs is handed in by `run.py`; it reads no environment, never asks which
strategy it has, and names no checkpoint file: single-process, DDP and DeepSpeed runs
share this one loop, and the checkpoint manager writes whatever parts were registered.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader

from dist_lstm.checkpoint import CheckpointManager
from dist_lstm.checkpoint.policy import SavePolicy
from dist_lstm.config.schema import TrainerConfig
from dist_lstm.data.tokenizer import Tokenizer
from dist_lstm.evaluation import validation_metrics
from dist_lstm.logging.console import TrainingProgress
from dist_lstm.logging.metrics import MetricsWriter, peak_memory_mb
from dist_lstm.logging.window import LossWindow
from dist_lstm.strategy import Strategy
from dist_lstm.train.optim import LRSchedule
from dist_lstm.train.signals import StopRequest
from dist_lstm.train.stopping import BestTracker, StepVote, TrainingLimits

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where training is; a checkpoint part ("trainer")."""

    step: int = 0
    epoch: int = 0
    last_validated_step: int = -1
    history: List[Dict[str, Any]] = field(default_factory=list)  # validation records
    stop_reason: Optional[str] = None  # not saved: a resumed run goes on
    stop_signal: Optional[int] = None  # set when a signal stopped training

    def state_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("stop_")}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.__init__(**state)


class Trainer:
    def __init__(
        self,
        cfg: TrainerConfig,
        strategy: Strategy,
        schedule: LRSchedule,
        train_loader: DataLoader,
        valid_loader: DataLoader,
        valid_references: Sequence[str],
        tokenizer: Tokenizer,
        checkpoints: CheckpointManager,
        save_policy: SavePolicy,
        metrics: MetricsWriter,
    ):
        """cfg: the `trainer` config group."""
        self.cfg = cfg
        self.strategy = strategy
        self.schedule = schedule
        self.train_loader = train_loader
        self.valid_loader = valid_loader
        self.valid_references = valid_references
        self.tokenizer = tokenizer
        self.checkpoints = checkpoints
        self.save_policy = save_policy
        self.metrics = metrics
        self.state = TrainState()
        self.best = BestTracker(cfg.monitor, cfg.early_stopping_patience)
        self.window = LossWindow()
        self.stop_request = StopRequest()  # run.py installs it around fit()
        self.vote = StepVote(strategy.host_sum, strategy.is_main)
        self.limits = TrainingLimits(cfg.max_steps, cfg.max_epochs, cfg.max_time)
        self._saved_step: Optional[int] = None  # step of the newest checkpoint
        self._start = time.monotonic()
        self._time_up = False  # rank 0's verdict on trainer.max_time, from the step vote

    def resumed_at(self, step: int) -> None:
        """The checkpoint manager restored this step: it is saved already."""
        self._saved_step = step

    # ----------------------------------------------------------------- the loop
    def fit(self) -> TrainState:
        """Train until max_steps, max_epochs, max_time or early stopping, then save."""
        sampler = self.train_loader.batch_sampler
        per_epoch = math.ceil(len(sampler) / self.cfg.accumulate_grad_batches)
        progress = TrainingProgress(
            self.limits.planned_steps(per_epoch), self.cfg.progress_bar and self.strategy.is_main
        )
        self._start = time.monotonic()
        self._time_up = self.limits.time_is_up(0.0)  # the same verdict on every rank
        self._check_stop(end_of_epoch=True)  # a resumed run may already be done
        self.window.restart_clock()  # tokens/s count from here
        try:
            while self.state.stop_reason is None:
                sampler.set_epoch(self.state.epoch)
                self._train_epoch(sampler.remaining(), progress)
                if self.state.stop_reason:
                    break
                self.state.epoch += 1
                if self.cfg.val_every_steps == 0:
                    self.validate()
                self._check_stop(end_of_epoch=True)
        finally:
            progress.close()
        if self.state.stop_signal is None and self.state.last_validated_step != self.state.step:
            self.validate()  # saves
        if self._saved_step != self.state.step:
            self._save()
        self.checkpoints.wait()  # an asynchronous save is committed before training ends
        state = self.state
        log.info(
            f"training stopped: {state.stop_reason} after {state.step} steps, {state.epoch} "
            f"epochs, {self.elapsed:.0f} s; {self.best.describe()}"
        )
        return state

    def _train_epoch(self, batches: int, progress: TrainingProgress) -> None:
        """Run the epoch's remaining `batches`, one optimizer step per accumulation group.

        Every rank has the same number of batches, so all ranks agree on which micro-batch
        closes a group (the epoch's last group may be shorter) and synchronizes gradients.
        """
        accumulate = self.cfg.accumulate_grad_batches
        for index, batch in enumerate(self.train_loader):
            group_start = index - index % accumulate
            group_size = min(accumulate, batches - group_start)
            closes_group = index == group_start + group_size - 1
            self.window.add(self._forward_backward(batch, closes_group, 1.0 / group_size))
            if closes_group:
                self._optimizer_step(progress)
                if self.state.stop_reason:
                    return

    def _forward_backward(self, batch, sync: bool, scale: float) -> Tuple[torch.Tensor, int]:
        """One micro-batch: (its summed loss, still on the device, and its target tokens).

        Nothing here waits for the device: the token count and the positions of real
        tokens come from the host-side batch, and the loss is read only at logging steps.
        """
        batch = self.strategy.align_batch(batch).to(self.strategy.device)
        with self.strategy.micro_batch(sync_gradients=sync):
            loss_sum, tokens = self.strategy.model(
                batch.src,
                batch.src_lengths,
                batch.tgt_in,
                batch.tgt_out,
                self.cfg.label_smoothing,
                batch.tgt_positions,
            )
            self.strategy.backward(loss_sum / tokens * scale)
        return loss_sum.detach(), tokens

    def _optimizer_step(self, progress: TrainingProgress) -> None:
        self.window.grad_norm = self.strategy.step()
        self.schedule.after_step()
        self.state.step += 1
        self.window.steps += 1
        step = self.state.step
        if step % self.cfg.log_every_steps == 0 or step == 1:
            self._log_train(progress)
        paused = time.monotonic()
        saved = True
        if self.cfg.val_every_steps and step % self.cfg.val_every_steps == 0:
            self.validate()  # saves
        elif self.save_policy.due_at_step(step):
            self._save()
        else:
            saved = False
        vote = self.vote.poll(
            self.stop_request.signum,
            self.save_policy.due_by_clock(),
            self.limits.time_is_up(self.elapsed),
        )
        self._time_up = vote.time_up
        if vote.stop_signal is not None:
            self.state.stop_signal, self.state.stop_reason = vote.stop_signal, vote.stop_reason
        if vote.save_due and not saved:
            self._save()
        self.window.started += time.monotonic() - paused  # keep tokens/s about training
        self._check_stop(end_of_epoch=False)

    def _log_train(self, progress: TrainingProgress) -> None:
        """Read the window's loss from the device (the only wait for it between logs)."""
        self.window.raise_if_diverged(self.state.step)
        summary = self.window.summary(self.strategy.all_reduce_sum)
        lr = self.strategy.optimizer.param_groups[0]["lr"]
        record = {"step": self.state.step, "epoch": self.state.epoch, **summary}
        record.update(lr=lr, memory_mb=peak_memory_mb(self.strategy.device), elapsed_s=self.elapsed)
        if self.strategy.is_main:
            self.metrics.write(record)
        progress.update(self.state.step, summary["loss"], lr, summary["tokens_per_sec"])
        self.window.reset()

    # ------------------------------------------------------------- validation
    def validate(self) -> Dict[str, float]:
        started = time.monotonic()
        model = self.strategy.eval_model()
        with self.strategy.decoding_autocast():  # in the precision the run trains in
            metrics, hypotheses = validation_metrics(
                model,
                self.valid_loader,
                self.strategy.device,
                {
                    "max_len_a": self.cfg.decode_max_len_a,
                    "max_len_b": self.cfg.decode_max_len_b,
                    "beam": self.cfg.val_beam,
                },
                self.valid_references,
                self.tokenizer,
                self.strategy.all_reduce_sum,
                self.strategy.gather_objects,
            )
        self.state.last_validated_step = self.state.step
        improved = self.best.update(metrics[self.cfg.monitor], self.state.step)
        self.schedule.after_validation(metrics[self.cfg.monitor])
        record = {"step": self.state.step, "epoch": self.state.epoch, **metrics}
        record.update(val_seconds=time.monotonic() - started, elapsed_s=self.elapsed)
        self.state.history.append(record)
        if self.strategy.is_main:
            decode = functools.partial(self.tokenizer.decode, "tgt")
            self.metrics.log_samples(self.state.step, hypotheses, decode, self.valid_references)
            self.metrics.write(record)
            log.info(
                "validation step %d | loss %.3f | ppl %.2f | BLEU %.2f | chrF %.2f%s",
                *(record[k] for k in ("step", "val_loss", "val_ppl", "val_bleu", "val_chrf")),
                "  (best)" if improved else "",
            )
        self._save(metrics=metrics, best=improved)
        return metrics

    # ---------------------------------------------------------------- stopping
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def _check_stop(self, end_of_epoch: bool) -> None:
        state = self.state
        if state.stop_signal is None:
            state.stop_reason = self.limits.reached(
                state.step, state.epoch, self._time_up, end_of_epoch
            ) or self.best.stop_reason()

    def _save(self, metrics: Optional[Dict[str, float]] = None, best: bool = False) -> None:
        """Ask the checkpoint manager for a checkpoint of this step (all ranks take part)."""
        self.window.raise_if_diverged(self.state.step)
        self.save_policy.saved()
        self._saved_step = self.state.step
        world_size = self.strategy.topology.world_size
        self.checkpoints.save(self.state.step, metrics=metrics, best=best, world_size=world_size)
