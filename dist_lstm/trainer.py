"""The training loop: batches -> strategy backward/step -> log -> validate -> save request.

Everything it needs is handed in by `run.py`; it reads no environment, never asks which
strategy it has, and names no checkpoint file: single-process, DDP and DeepSpeed runs
share this one loop, and the checkpoint manager writes whatever parts were registered.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from dist_lstm.checkpoint import CheckpointManager
from dist_lstm.checkpoint.policy import SavePolicy
from dist_lstm.config.validate import parse_duration
from dist_lstm.data.tokenizer import Tokenizer
from dist_lstm.evaluation import loss_and_translations, summarize
from dist_lstm.logging.console import TrainingProgress
from dist_lstm.logging.metrics import MetricsWriter, peak_memory_mb
from dist_lstm.logging.window import LossWindow
from dist_lstm.optim import LRSchedule
from dist_lstm.signals import StopRequest
from dist_lstm.stopping import BestTracker, StepVote
from dist_lstm.strategy import Strategy

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
        cfg: DictConfig,
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
        self.max_seconds = parse_duration(cfg.max_time) if cfg.max_time else None
        self._saved_step: Optional[int] = None  # step of the newest checkpoint
        self._start = time.monotonic()

    def resumed_at(self, step: int) -> None:
        """The checkpoint manager restored this step: it is saved already."""
        self._saved_step = step

    # ----------------------------------------------------------------- the loop
    def fit(self) -> TrainState:
        """Train until max_steps, max_epochs, max_time or early stopping, then save."""
        sampler = self.train_loader.batch_sampler
        progress = TrainingProgress(
            self._planned_steps(), self.cfg.progress_bar and self.strategy.is_main
        )
        self._start = time.monotonic()
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
        log.info(
            "training stopped: %s after %d steps, %d epochs, %.0f s; %s",
            self.state.stop_reason,
            self.state.step,
            self.state.epoch,
            self.elapsed,
            self.best.describe(),
        )
        return self.state

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
        vote = self.vote.poll(self.stop_request.signum, self.save_policy.due_by_clock())
        if vote.stop_signal is not None:
            self.state.stop_signal, self.state.stop_reason = vote.stop_signal, vote.stop_reason
        if vote.save_due and not saved:
            self._save()
        self.window.started += time.monotonic() - paused  # keep tokens/s about training
        self._check_stop(end_of_epoch=False)

    def _log_train(self, progress: TrainingProgress) -> None:
        """Read the window's loss from the device (the only wait for it between logs)."""
        self._raise_if_diverged()
        window = self.window
        totals = self.strategy.all_reduce_sum(
            torch.tensor([float(window.loss_sum), window.tokens], dtype=torch.float64)
        )
        loss = float(totals[0] / max(totals[1], 1))
        tokens_per_sec = float(totals[1]) / max(window.seconds, 1e-9)
        lr = self.strategy.optimizer.param_groups[0]["lr"]
        record = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            "loss": loss,
            "ppl": math.exp(min(loss, 50.0)),
            "lr": lr,
            "tokens_per_sec": tokens_per_sec,
            "step_time_s": window.seconds / max(window.steps, 1),
            "grad_norm": None if window.grad_norm is None else float(window.grad_norm),
            "memory_mb": peak_memory_mb(self.strategy.device),
            "elapsed_s": self.elapsed,
        }
        if self.strategy.is_main:
            self.metrics.write(record)
        progress.update(self.state.step, loss, lr, tokens_per_sec)
        window.reset()

    def _raise_if_diverged(self) -> None:
        """Stop on a non-finite loss before it is logged or saved.

        Checked at logging steps and before every save rather than after every step, which
        would make a GPU wait each step; a checkpoint therefore never holds the weights of a
        diverged run, and at most log_every_steps steps are computed in vain.
        """
        window = self.window
        if window.steps and not bool(torch.isfinite(torch.as_tensor(window.loss_sum))):
            first = self.state.step - window.steps + 1
            raise FloatingPointError(
                f"loss became {float(window.loss_sum)} between steps {first} and "
                f"{self.state.step}: lower optim.lr, keep strategy.clip_grad_norm > 0, or "
                "check the data. Checkpoints written before it are intact."
            )

    # ------------------------------------------------------------- validation
    def validate(self) -> Dict[str, float]:
        started = time.monotonic()
        loss_sum, tokens, hyps = loss_and_translations(
            self.strategy.eval_model(),
            self.valid_loader,
            self.strategy.device,
            self.cfg.decode_max_len_a,
            self.cfg.decode_max_len_b,
            self.cfg.val_beam,
        )
        sums = self.strategy.all_reduce_sum(torch.tensor([loss_sum, tokens], dtype=torch.float64))
        merged: Dict[int, list] = {}
        for part in self.strategy.gather_objects(hyps):
            merged.update(part)
        metrics = summarize(
            float(sums[0]), int(sums[1]), merged, self.valid_references, self.tokenizer
        )
        if self.strategy.is_main:
            self._log_samples(merged)
        self.state.last_validated_step = self.state.step
        improved = self.best.update(metrics[self.cfg.monitor], self.state.step)
        self.schedule.after_validation(metrics[self.cfg.monitor])
        record = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            **metrics,
            "val_seconds": time.monotonic() - started,
            "elapsed_s": self.elapsed,
        }
        self.state.history.append(record)
        if self.strategy.is_main:
            self.metrics.write(record)
            log.info(
                "validation step %d | loss %.3f | ppl %.2f | BLEU %.2f | chrF %.2f%s",
                self.state.step,
                metrics["val_loss"],
                metrics["val_ppl"],
                metrics["val_bleu"],
                metrics["val_chrf"],
                "  (best)" if improved else "",
            )
        self._save(metrics=metrics, best=improved)
        return metrics

    def _log_samples(self, hypotheses: Dict[int, list], count: int = 5) -> None:
        """A few validation translations beside their references (W&B table)."""
        first = sorted(hypotheses)[:count]
        texts = self.tokenizer.decode("tgt", [hypotheses[i] for i in first])
        rows = [[i, text, self.valid_references[i]] for i, text in zip(first, texts)]
        self.metrics.log_samples(self.state.step, rows)

    # ---------------------------------------------------------------- stopping
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def _check_stop(self, end_of_epoch: bool) -> None:
        cfg, state = self.cfg, self.state
        if state.stop_signal is not None:
            return
        if cfg.max_steps is not None and state.step >= cfg.max_steps:
            state.stop_reason = f"reached trainer.max_steps={cfg.max_steps}"
        elif end_of_epoch and cfg.max_epochs is not None and state.epoch >= cfg.max_epochs:
            state.stop_reason = f"reached trainer.max_epochs={cfg.max_epochs}"
        elif self.max_seconds is not None and self.elapsed >= self.max_seconds:
            state.stop_reason = f"reached trainer.max_time={cfg.max_time}"
        else:
            state.stop_reason = self.best.stop_reason()

    def _planned_steps(self) -> Optional[int]:
        """Total steps for the progress bar's ETA, when max_steps or max_epochs bound it."""
        per_epoch = math.ceil(
            len(self.train_loader.batch_sampler) / self.cfg.accumulate_grad_batches
        )
        bounds = [
            b
            for b in (self.cfg.max_steps, self.cfg.max_epochs and self.cfg.max_epochs * per_epoch)
            if b
        ]
        return min(bounds) if bounds else None

    def _save(self, metrics: Optional[Dict[str, float]] = None, best: bool = False) -> None:
        """Ask the checkpoint manager for a checkpoint of this step (all ranks take part)."""
        self._raise_if_diverged()
        self.save_policy.saved()
        self._saved_step = self.state.step
        self.checkpoints.save(
            self.state.step,
            metrics=metrics,
            best=best,
            world_size=self.strategy.topology.world_size,
        )
