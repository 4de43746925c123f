"""Stopping rules, accumulation and best-checkpoint selection of the training loop."""

import functools
import traceback
from typing import Set

import pytest
import torch
from torch.overrides import TorchFunctionMode

from dist_lstm.checkpoint import load_checkpoint, read_meta
from dist_lstm.train.trainer import Trainer
from dist_lstm.translate.inference import Translator
from tests.helpers.configs import TINIER_MODEL, TINY_RUN
from tests.helpers.corpus import reversal_corpus
from tests.helpers.hardware import needs_bf16
from tests.helpers.runs import train_here

# Half the shared corpus: the epoch-based tests train whole epochs.
TRAINER_RUN = (
    *TINY_RUN,
    *TINIER_MODEL,
    "data.max_train_examples=300",
    "optim.schedule=constant",
    "trainer.log_every_steps=1",
)


def run(tmp_path, corpus, *overrides):
    return train_here(tmp_path, [*corpus, *TRAINER_RUN, *overrides])


def steps_per_epoch(records):
    return max(r["step"] for r in records if r.get("epoch") == 0 and "loss" in r)


def test_max_epochs_and_validation_each_epoch(tmp_path, corpus):
    result, records = run(tmp_path, corpus, "trainer.max_epochs=2")
    vals = [r for r in records if "val_bleu" in r]
    assert [r["epoch"] for r in vals] == [1, 2]
    assert result["step"] == vals[-1]["step"] == 2 * vals[0]["step"]


def test_accumulation_divides_optimizer_steps(tmp_path, corpus):
    _, single = run(tmp_path / "a", corpus, "trainer.max_epochs=1")
    _, accumulated = run(
        tmp_path / "b", corpus, "trainer.max_epochs=1", "trainer.accumulate_grad_batches=2"
    )
    batches = max(r["step"] for r in single if "loss" in r)
    assert max(r["step"] for r in accumulated if "loss" in r) == -(-batches // 2)


def test_max_steps_wins_over_epochs(tmp_path, corpus):
    result, _ = run(tmp_path, corpus, "trainer.max_steps=3", "trainer.max_epochs=50")
    assert result["step"] == 3


def test_max_time_stops_training(tmp_path, corpus):
    result, records = run(tmp_path, corpus, "trainer.max_time=1", "trainer.max_epochs=1000")
    assert result["step"] < 1000 * steps_per_epoch(records)
    assert records[-1]["step"] == result["step"]


def test_early_stopping_after_patience(tmp_path, corpus):
    # A learning rate this small leaves BLEU unchanged, so nothing ever improves.
    result, records = run(
        tmp_path,
        corpus,
        "optim.lr=1e-12",
        "trainer.max_epochs=20",
        "trainer.early_stopping_patience=2",
        "trainer.monitor=val_bleu",
    )
    vals = [r for r in records if "val_bleu" in r]
    assert len(vals) == 3  # the first sets the best, two more without improvement stop it


def test_best_checkpoint_is_the_best_validation(tmp_path, corpus):
    _, records = run(
        tmp_path,
        corpus,
        "trainer.max_steps=12",
        "trainer.max_epochs=null",
        "trainer.val_every_steps=4",
        "trainer.monitor=val_loss",
        "optim.lr=0.01",
    )
    vals = [r for r in records if "val_loss" in r]
    best = min(vals, key=lambda r: r["val_loss"])
    saved = load_checkpoint(tmp_path / "checkpoints" / "best")
    assert saved["step"] == best["step"]
    assert saved["metrics"]["val_loss"] == pytest.approx(best["val_loss"])


def test_each_step_is_saved_once_when_the_last_validation_already_saved_it(
    tmp_path, corpus, monkeypatch
):
    from dist_lstm.checkpoint import CheckpointManager

    save, saved_steps = CheckpointManager.save, []

    def recording_save(self, step, **kwargs):
        saved_steps.append(step)
        return save(self, step, **kwargs)

    monkeypatch.setattr(CheckpointManager, "save", recording_save)
    run(
        tmp_path,
        corpus,
        "trainer.max_steps=4",
        "trainer.max_epochs=null",
        "trainer.val_every_steps=2",
    )
    assert saved_steps == [2, 4]


def linear_output_dtypes(monkeypatch, owner, method: str) -> Set[torch.dtype]:
    """The dtypes of the products every nn.Linear outputs while `owner.method` runs, filled
    in as it runs (a global forward hook, held for the call only). The output layer's
    fused loss, a scalar summed in fp32 whatever the products' dtype, is left out."""
    seen: Set[torch.dtype] = set()
    original = getattr(owner, method)

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Linear) and output.dim() > 0:
            seen.add(output.dtype)

    @functools.wraps(original)
    def recording(*args, **kwargs):
        handle = torch.nn.modules.module.register_module_forward_hook(record)
        try:
            return original(*args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(owner, method, recording)
    return seen


@needs_bf16
def test_bf16_training_runs_end_to_end_and_decodes_in_bf16(tmp_path, corpus, monkeypatch):
    """Validation and the final test decode under the run's autocast: their products are
    bf16, as in training (README, strategy.precision)."""
    validation = linear_output_dtypes(monkeypatch, Trainer, "validate")
    final_test = linear_output_dtypes(monkeypatch, Translator, "translate")
    split = reversal_corpus(tmp_path, 2, {"test": 8}, "abcdef", 6)
    result, records = run(
        tmp_path / "run",
        corpus,
        "strategy.precision=bf16",
        "trainer.max_steps=4",
        "trainer.max_epochs=null",
        "trainer.val_every_steps=4",
        *(override for override in split if override.startswith("data.test_")),
    )
    losses = [r["loss"] for r in records if "loss" in r]
    assert result["step"] == 4 and all(loss == loss and loss < 10 for loss in losses)
    assert validation == {torch.bfloat16}
    assert final_test == {torch.bfloat16} and "test_bleu" in result
    assert read_meta(tmp_path / "run" / "checkpoints" / "last")["precision"] == "bf16"


class HostReads(TorchFunctionMode):
    """Records every read of a tensor's values into Python (item, float, bool, tolist,
    nonzero: on a GPU each waits for the device) with the functions on the stack."""

    READS = {
        torch.Tensor.item,
        torch.Tensor.__float__,
        torch.Tensor.__int__,
        torch.Tensor.__bool__,
        torch.Tensor.__index__,
        torch.Tensor.tolist,
        torch.Tensor.nonzero,
        torch.nonzero,
    }

    def __init__(self):
        super().__init__()
        self.stacks = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.stacks.append({frame.name for frame in traceback.extract_stack()})
        return func(*args, **(kwargs or {}))


def test_training_steps_read_no_values_from_the_device_between_logging_steps(
    tmp_path, corpus, monkeypatch
):
    # Only host-side batch preparation (collate, Batch.to before the copy, the data
    # loader's seed) may read tensor values in a step that neither logs nor saves; and
    # the encoder's CPU recurrence, which reads a packed batch's sizes (always on the host).
    allowed = {"to", "collate", "__iter__", "_log_train", "validate", "_save", "packed_recurrence"}
    reads = HostReads()
    with reads:
        result, _ = run(
            tmp_path,
            corpus,
            "trainer.max_steps=6",
            "trainer.max_epochs=null",
            "trainer.log_every_steps=5",
            "trainer.val_every_steps=0",
            "checkpoint.every_steps=null",
        )
    assert result["step"] == 6
    in_steps = [s for s in reads.stacks if "_train_epoch" in s]
    at_logging = [s for s in in_steps if "_log_train" in s]
    assert at_logging, "the loss is read at logging steps (checks the recorder works)"
    assert [s for s in in_steps if not s & allowed] == []


def test_a_diverged_loss_stops_training_before_anything_is_saved(tmp_path, corpus, monkeypatch):
    from dist_lstm.model.seq2seq import Seq2Seq

    forward, calls = Seq2Seq.forward, []

    def diverging_from_step_3(self, *args, **kwargs):
        loss, tokens = forward(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) >= 3 else loss), tokens

    monkeypatch.setattr(Seq2Seq, "forward", diverging_from_step_3)
    with pytest.raises(FloatingPointError, match="between steps 2 and 4") as error:
        run(
            tmp_path,
            corpus,
            "trainer.max_steps=8",
            "trainer.max_epochs=null",
            "trainer.log_every_steps=4",
            "trainer.val_every_steps=0",
            "checkpoint.every_steps=2",
        )
    assert "Checkpoints written before it are intact" in str(error.value)
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert saved == ["step_00000002"]
    weights = load_checkpoint(tmp_path / "checkpoints" / saved[0])["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())
