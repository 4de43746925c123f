"""The training loop: batches -> strategy backward/step -> log -> validate -> save.

Everything it needs is handed in by `run.py`; it reads no environment and never asks which
strategy it has, so single-process, DDP and DeepSpeed runs share this one loop.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from omegaconf import DictConfig
from torch.distributed.checkpoint.api import CheckpointException
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader

from dist_lstm.checkpoint import CheckpointManager, rng
from dist_lstm.checkpoint.manager import STATE, TRAINER, rng_file
from dist_lstm.config.validate import parse_duration
from dist_lstm.data.tokenizer import Tokenizer
from dist_lstm.errors import UserError
from dist_lstm.evaluation import loss_and_translations, monitor_mode, summarize
from dist_lstm.logging.console import TrainingProgress
from dist_lstm.logging.metrics import MetricsWriter, peak_memory_mb
from dist_lstm.signals import StopRequest
from dist_lstm.strategy import Strategy

log = logging.getLogger(__name__)

@dataclass
class TrainState:
    """Counters that say where training is; saved with checkpoints."""

    step: int = 0
    epoch: int = 0
    best_metric: Optional[float] = None
    best_step: Optional[int] = None
    validations_without_improvement: int = 0
    last_validated_step: int = -1
    stop_reason: Optional[str] = None
    stop_signal: Optional[int] = None  # set when a signal stopped training
    history: list = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        cfg: DictConfig,
        strategy: Strategy,
        scheduler: Any,
        train_loader: DataLoader,
        valid_loader: DataLoader,
        valid_references: Sequence[str],
        tokenizer: Tokenizer,
        checkpoints: CheckpointManager,
        metrics: MetricsWriter,
        checkpoint_meta: Dict[str, Any],
    ):
        self.cfg = cfg.trainer
        self.seed = cfg.seed
        self.save_every_steps = cfg.checkpoint.every_steps
        minutes = cfg.checkpoint.every_minutes
        self.save_every_seconds = 60.0 * minutes if minutes else None
        self.async_save = cfg.checkpoint.async_save
        self._last_save = time.monotonic()
        self._saved_step: Optional[int] = None  # step of the newest checkpoint
        self.strategy = strategy
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.valid_loader = valid_loader
        self.valid_references = valid_references
        self.tokenizer = tokenizer
        self.checkpoints = checkpoints
        self.metrics = metrics
        self.checkpoint_meta = checkpoint_meta
        self.state = TrainState()
        self.stop_request = StopRequest()  # run.py installs it around fit()
        self.mode = monitor_mode(self.cfg.monitor)
        self.max_seconds = parse_duration(self.cfg.max_time) if self.cfg.max_time else None
        self._start = time.monotonic()
        self._window = _Window()  # loss and time since the last logged step

    # ----------------------------------------------------------------- the loop
    def fit(self) -> TrainState:
        """Train until max_steps, max_epochs, max_time or early stopping, then save."""
        sampler = self.train_loader.batch_sampler
        progress = TrainingProgress(
            self._planned_steps(), self.cfg.progress_bar and self.strategy.is_main
        )
        self._start = time.monotonic()
        self._check_stop(end_of_epoch=True)  # a resumed run may already be done
        self._window.reset()  # tokens/s count from here
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
        best = (
            f"best {self.cfg.monitor} {self.state.best_metric:.3f} at step {self.state.best_step}"
            if self.state.best_metric is not None
            else "not validated yet"
        )
        log.info(
            "training stopped: %s after %d steps, %d epochs, %.0f s; %s",
            self.state.stop_reason,
            self.state.step,
            self.state.epoch,
            self.elapsed,
            best,
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
            self._window.add(self._forward_backward(batch, closes_group, 1.0 / group_size))
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
        window = self._window
        window.grad_norm = self.strategy.step()
        if not isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step()
        self.state.step += 1
        window.steps += 1
        step = self.state.step
        if step % self.cfg.log_every_steps == 0 or step == 1:
            self._log_train(progress)
        paused = time.monotonic()
        saved = True
        if self.cfg.val_every_steps and step % self.cfg.val_every_steps == 0:
            self.validate()  # saves
        elif self.save_every_steps and step % self.save_every_steps == 0:
            self._save()
        else:
            saved = False
        if self._poll_ranks() and not saved:
            self._save()
        window.started += time.monotonic() - paused  # keep tokens/s about training
        self._check_stop(end_of_epoch=False)

    def _log_train(self, progress: TrainingProgress) -> None:
        """Read the window's loss from the device (the only wait for it between logs)."""
        self._raise_if_diverged()
        window = self._window
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
        window = self._window
        if window.steps and not bool(torch.isfinite(window.loss_sum)):
            first = self.state.step - window.steps + 1
            raise FloatingPointError(
                f"loss became {float(window.loss_sum)} between steps {first} and "
                f"{self.state.step}: lower optim.lr, keep optim.clip_grad_norm > 0, or check "
                "the data. Checkpoints written before it are intact."
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
        improved = self._update_best(metrics[self.cfg.monitor])
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(metrics[self.cfg.monitor])
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

    def _update_best(self, value: float) -> bool:
        best = self.state.best_metric
        better = best is None or (value < best if self.mode == "min" else value > best)
        if better:
            self.state.best_metric, self.state.best_step = value, self.state.step
            self.state.validations_without_improvement = 0
        else:
            self.state.validations_without_improvement += 1
        return better

    # ---------------------------------------------------------------- stopping
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def _poll_ranks(self) -> bool:
        """Decisions every rank must take together, at every step, on host values only.

        Stop if any rank received a stop signal (ranks may get it at slightly different
        times, but all must leave the loop at the same step). Returns whether the
        checkpoint.every_minutes interval is up, by rank 0's clock.
        """
        local = self.stop_request.signum or 0
        due = (
            self.strategy.is_main
            and self.save_every_seconds is not None
            and time.monotonic() - self._last_save >= self.save_every_seconds
        )
        stopped, signums, saves = self.strategy.host_sum([float(local > 0), local, float(due)])
        if stopped > 0:
            signum = local or int(signums / stopped)
            self.state.stop_signal = signum
            self.state.stop_reason = f"stopped by {signal.Signals(signum).name}"
        return saves > 0

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
        elif (
            cfg.early_stopping_patience
            and state.validations_without_improvement >= cfg.early_stopping_patience
        ):
            state.stop_reason = (
                f"early stopping: {cfg.monitor} did not improve for "
                f"{cfg.early_stopping_patience} validations"
            )

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

    # ------------------------------------------------------------ checkpoints
    def _save(self, metrics: Optional[Dict[str, float]] = None, best: bool = False) -> Path:
        """Checkpoint the whole training state (all ranks take part)."""
        self._raise_if_diverged()
        meta = {"epoch": self.state.epoch, **self.checkpoint_meta}
        meta["world_size"] = self.strategy.topology.world_size
        if metrics is not None:
            meta["metrics"] = metrics
        self._last_save = time.monotonic()
        self._saved_step = self.state.step
        folder = self.checkpoints.save(
            self.state.step,
            write_state=lambda target: self.strategy.save_state(target, self.async_save),
            rank_state=rng.capture(),
            rank=self.strategy.topology.rank,
            shared_state=self.state_dict(),
            meta=meta,
            best=best,
        )
        if self.strategy.is_main:
            log.info("checkpoint: %s", folder)
        return folder

    def state_dict(self) -> Dict[str, Any]:
        """Where training is, identical on every rank: counters, data position, LR."""
        return {
            "train_state": asdict(self.state),
            "sampler": self.train_loader.batch_sampler.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.state = TrainState(**state["train_state"])
        self.train_loader.batch_sampler.load_state_dict(state["sampler"])
        self.scheduler.load_state_dict(state["scheduler"])

    def resume(self, folder: Path) -> None:
        """Continue exactly where the checkpoint in `folder` was written."""
        try:
            self.strategy.load_state(folder / STATE)
            self.load_state_dict(torch.load(folder / TRAINER, weights_only=True))
        except UserError:
            raise
        except (Exception, CheckpointException) as exc:  # DCP's is a BaseException
            raise UserError(
                f"resume: {folder} could not be loaded ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). Its files were changed or "
                "damaged after the save; resume from an earlier checkpoint with resume=PATH."
            ) from exc
        rank = self.strategy.topology.rank
        own_rng = rng_file(folder, rank)
        if own_rng.is_file():
            rng.restore(torch.load(own_rng, weights_only=True))
        else:  # written by fewer ranks: this rank starts a fresh, reproducible stream
            rng.reseed(self.seed, self.state.step, rank)
        self.state.stop_reason = None
        self.state.stop_signal = None
        self._saved_step = self.state.step  # that checkpoint is `folder`
        if self.strategy.is_main:
            log.info(
                "resumed from %s: step %d, epoch %d", folder, self.state.step, self.state.epoch
            )


class _Window:
    """Loss, tokens and time since the last logged step.

    The loss sum stays a device tensor (adding to it does not wait for the device) until
    a logging step reads it.
    """

    def __init__(self) -> None:
        self.reset()
        self.grad_norm: Optional[torch.Tensor] = None

    def reset(self) -> None:
        self.loss_sum: Union[float, torch.Tensor] = 0.0
        self.tokens = 0
        self.steps = 0
        self.started = time.monotonic()

    def add(self, micro_batch: Tuple[torch.Tensor, int]) -> None:
        loss_sum, tokens = micro_batch
        self.loss_sum = self.loss_sum + loss_sum
        self.tokens += tokens

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started
