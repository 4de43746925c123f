"""Checkpoints in one process: exact resume, atomic commit, retention, bad resume input."""

import logging
import shutil

import pytest
import torch

from dist_lstm.checkpoint import load_checkpoint
from dist_lstm.checkpoint.manager import CheckpointManager
from dist_lstm.config.compose import compose_config
from dist_lstm.errors import UserError
from tests.helpers.configs import TINIER_MODEL, TINY_RUN
from tests.helpers.corpus import MAX_TOKENS
from tests.helpers.runs import train_here

# Resume must restore the RNG dropout draws from and the LR schedule's warm-up position.
RESUME_RUN = (
    *TINY_RUN,
    *TINIER_MODEL,
    "model.dropout=0.2",
    "optim.schedule=inverse_sqrt",
    "optim.warmup_steps=3",
    "trainer.log_every_steps=1",
    "trainer.max_epochs=null",
    "trainer.val_every_steps=4",
)


def run(run_dir, corpus, *overrides):
    return train_here(run_dir, [*corpus, *RESUME_RUN, *overrides])[1]


def losses(records):
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    records = run(run_dir, corpus, "trainer.max_steps=14")
    return run_dir, records


@pytest.mark.parametrize("asynchronous", [False, True])
def test_resumed_run_matches_an_uninterrupted_one_exactly(
    corpus, uninterrupted, tmp_path, asynchronous
):
    """Stopped at step 6 (mid-epoch, after no validation), continued to 14: the same
    per-step losses and bitwise the same weights, with dropout on and a warmup schedule;
    also when checkpoints are written in the background while training goes on."""
    reference_dir, reference = uninterrupted
    saving = ["checkpoint.every_steps=3", f"checkpoint.async_save={asynchronous}"]
    run(tmp_path, corpus, "trainer.max_steps=6", *saving)
    records = run(tmp_path, corpus, "trainer.max_steps=14", "resume=auto", *saving)
    assert losses(records) == losses(reference)  # metrics.jsonl forgot the redone steps
    mine = load_checkpoint(tmp_path / "checkpoints" / "last")["model"]
    theirs = load_checkpoint(reference_dir / "checkpoints" / "last")["model"]
    for name in theirs:
        assert torch.equal(mine[name], theirs[name]), name


def test_ddp_with_fp16_gradient_communication_resumes_exactly(corpus, uninterrupted, tmp_path):
    """torch's fp16 hook (a world of 1 here: gradients still cross it in 16 bits) holds no
    state, but the resumed run must install it again: the same losses and bitwise weights
    as an unbroken fp16 run, which itself leaves the fp32 run once 16-bit gradients change an
    update (Adam's first step follows only the gradients' signs, which they keep)."""
    fp16 = ["strategy=ddp", "strategy.comm_hook=fp16"]
    reference = run(tmp_path / "unbroken", corpus, "trainer.max_steps=8", *fp16)
    run(tmp_path / "resumed", corpus, "trainer.max_steps=4", *fp16)
    resumed = run(tmp_path / "resumed", corpus, "trainer.max_steps=8", "resume=auto", *fp16)
    assert losses(resumed) == losses(reference)
    mine = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last")["model"]
    theirs = load_checkpoint(tmp_path / "unbroken" / "checkpoints" / "last")["model"]
    for name in theirs:
        assert torch.equal(mine[name], theirs[name]), name
    fp32 = losses(uninterrupted[1])[:8]
    assert losses(reference)[0] == fp32[0] and losses(reference) != fp32


TIMINGS = {"tokens_per_sec", "step_time_s", "elapsed_s", "memory_mb", "val_seconds"}


def test_metrics_after_a_resume_equal_the_uninterrupted_run_line_for_line(corpus, tmp_path):
    """The loss window is checkpointed: logging every 4 steps and continued from step 6,
    the line of step 8 averages steps 5-8 as in the run that never stopped (not 7-8)."""
    common = ["trainer.log_every_steps=4", "checkpoint.every_steps=3", "checkpoint.keep_last=9"]
    reference = run(tmp_path / "reference", corpus, "trainer.max_steps=10", *common)
    step_6 = tmp_path / "reference" / "checkpoints" / "step_00000006"
    resumed = run(tmp_path / "resumed", corpus, "trainer.max_steps=10", f"resume={step_6}", *common)

    def after_step_6(records):
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records if r["step"] > 6]

    assert [r["step"] for r in resumed if "loss" in r] == [8]
    assert after_step_6(resumed) == after_step_6(reference)


def test_resume_from_a_run_directory_continues_its_newest_complete_checkpoint(
    corpus, uninterrupted, tmp_path, caplog
):
    """resume=RUN_DIR names another run's directory, not a checkpoint folder: the new run
    continues in its own directory from that run's newest checkpoint with a COMPLETE
    marker (step 14), not from a newer save that never completed."""
    reference_dir, _ = uninterrupted
    earlier = tmp_path / "earlier"  # a copy: the module's reference run stays as it is
    shutil.copytree(reference_dir / "checkpoints", earlier / "checkpoints", symlinks=True)
    unfinished = earlier / "checkpoints" / "step_00000020"
    shutil.copytree(earlier / "checkpoints" / "step_00000014", unfinished)
    (unfinished / "COMPLETE").unlink()
    caplog.set_level(logging.INFO, logger="dist_lstm.train.run")
    records = run(tmp_path / "continued", corpus, "trainer.max_steps=16", f"resume={earlier}")
    newest = earlier / "checkpoints" / "step_00000014"
    assert f"resumed from {newest}: step 14" in caplog.text
    assert [s for s, _ in losses(records)] == [15, 16]


def test_retention_keeps_newest_and_best(uninterrupted):
    run_dir, records = uninterrupted
    folder = run_dir / "checkpoints"
    steps = sorted(int(p.name[5:]) for p in folder.glob("step_*"))
    vals = {r["step"]: r["val_bleu"] for r in records if "val_bleu" in r}
    best_step = max(vals, key=lambda s: (vals[s], -s))
    assert set(steps) == {8, 12, 14} | {best_step}
    assert (folder / "best").resolve().name == f"step_{best_step:08d}"
    assert (folder / "last").resolve().name == "step_00000014"


def test_interrupted_save_is_never_loaded_and_is_cleaned_up(corpus, tmp_path):
    run(tmp_path, corpus, "trainer.max_steps=4")
    folder = tmp_path / "checkpoints"
    # A save killed before its marker, and a scratch folder of another.
    broken = folder / "step_00000009"
    shutil.copytree(folder / "step_00000004", broken)
    (broken / "COMPLETE").unlink()
    (folder / ".incomplete_step_00000010").mkdir()
    manager = CheckpointManager(tmp_path, keep_last=3)
    assert manager.latest().name == "step_00000004"
    assert not broken.exists() and not (folder / ".incomplete_step_00000010").exists()
    shutil.copytree(folder / "step_00000004", broken)
    (broken / "COMPLETE").unlink()
    assert manager.at_step(4) == folder / "step_00000004" and manager.at_step(9) is None
    with pytest.raises(UserError, match="no COMPLETE marker"):
        run(tmp_path / "other", corpus, "trainer.max_steps=8", f"resume={broken}")


def test_bad_resume_requests_fail_clearly_and_keep_the_checkpoints(corpus, tmp_path):
    run(tmp_path, corpus, "trainer.max_steps=4")
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(UserError, match="already holds checkpoints"):
        run(tmp_path, corpus, "trainer.max_steps=8")  # fresh start over a run
    with pytest.raises(UserError, match="model.hidden_size"):
        run(tmp_path, corpus, "trainer.max_steps=8", "resume=auto", "model.hidden_size=32")
    with pytest.raises(UserError, match="seed=7"):
        run(tmp_path, corpus, "trainer.max_steps=8", "resume=auto", "seed=7")
    with pytest.raises(UserError, match=f"trained with data.max_tokens={MAX_TOKENS}"):
        run(tmp_path, corpus, "trainer.max_steps=8", "resume=auto", "data.max_tokens=300")
    with pytest.raises(UserError, match="not a checkpoint folder"):
        run(tmp_path / "new", corpus, "trainer.max_steps=8", f"resume={tmp_path / 'nowhere'}")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


def test_checkpoints_from_before_a_model_key_existed_still_resume(corpus, tmp_path):
    """A checkpoint whose saved config lacks model.word_dropout (written before the key
    was added) resumes under today's default and refuses another value by name."""
    run(tmp_path, corpus, "trainer.max_steps=4")
    meta_file = tmp_path / "checkpoints" / "last" / "meta.pt"
    meta = torch.load(meta_file, weights_only=True)
    del meta["config"]["model"]["word_dropout"]
    torch.save(meta, meta_file)
    with pytest.raises(UserError, match="model.word_dropout"):
        run(tmp_path, corpus, "trainer.max_steps=6", "resume=auto", "model.word_dropout=0.1")
    records = run(tmp_path, corpus, "trainer.max_steps=6", "resume=auto")
    assert [s for s, _ in losses(records)][-2:] == [5, 6]


def test_resume_auto_without_checkpoints_starts_fresh(corpus, tmp_path):
    records = run(tmp_path, corpus, "trainer.max_steps=2", "resume=auto")
    assert [s for s, _ in losses(records)] == [1, 2]


def test_time_based_saves_follow_every_minutes(corpus, tmp_path):
    run(
        tmp_path,
        corpus,
        "trainer.max_steps=5",
        "checkpoint.every_minutes=1e-6",
        "checkpoint.keep_last=10",
    )
    steps = sorted(int(p.name[5:]) for p in (tmp_path / "checkpoints").glob("step_*"))
    assert steps == [1, 2, 3, 4, 5]


def test_async_save_is_refused_for_deepspeed():
    from dist_lstm.config import validate_config
    from dist_lstm.errors import ConfigError

    cfg = compose_config(["strategy=deepspeed", "checkpoint.async_save=true"])
    with pytest.raises(ConfigError, match="checkpoint.async_save"):
        validate_config(cfg)


def test_damaged_checkpoint_files_fail_with_a_clear_message(corpus, tmp_path):
    run(tmp_path, corpus, "trainer.max_steps=2")
    shard = next((tmp_path / "checkpoints" / "last" / "state").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated on disk after the save
    with pytest.raises(UserError, match="could not be loaded.*resume=PATH"):
        run(tmp_path, corpus, "trainer.max_steps=4", "resume=auto")


def test_checkpoint_without_its_dcp_index_fails_with_only_the_message(corpus, tmp_path, caplog):
    """Checked before dcp.load, which would log a traceback of its own first."""
    run(tmp_path, corpus, "trainer.max_steps=2")
    step = (tmp_path / "checkpoints" / "last").resolve()
    (step / "state" / ".metadata").unlink()
    caplog.set_level(logging.WARNING)
    with pytest.raises(UserError, match=f"resume: {step} is damaged: .*resume=PATH"):
        run(tmp_path, corpus, "trainer.max_steps=4", "resume=auto")
    assert "Traceback" not in caplog.text
