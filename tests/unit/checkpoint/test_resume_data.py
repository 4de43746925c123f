"""Resume keeps the data the batches are cut from: a change of any data option that shapes
them (data/shaping.py RESUME_KEYS) is refused, naming the key, both values and the fix.

Compared in-process against the smoke run's saved config, once per key; one resume of the
smoke run shows the whole path (exit status 2, one line, nothing saved lost)."""

import logging

import pytest

from dist_lstm.checkpoint.manager import read_meta
from dist_lstm.checkpoint.resume import as_override, check_same_data
from dist_lstm.config.compose import compose_config
from dist_lstm.data import shaping
from dist_lstm.errors import UserError
from dist_lstm.exit_policy import user_errors
from dist_lstm.train.run import train
from tests.helpers.data_options import another_value, concrete_keys, value_at, with_value


@pytest.fixture(scope="module")
def saved(smoke_run):
    """The smoke run's last checkpoint and its saved (resolved) data config."""
    folder = smoke_run / "checkpoints" / "last"
    return folder, read_meta(folder)["config"]["data"]


def with_a_corpus(data):
    return {
        **data,
        "corpora": [{"src": "/corpus/extra.src", "tgt": "/corpus/extra.tgt", "weight": 0.5}],
    }


@pytest.mark.parametrize("key", concrete_keys(shaping.RESUME_KEYS))
def test_a_changed_data_key_that_shapes_the_batches_is_refused(saved, key):
    folder, saved_data = saved
    before = with_a_corpus(saved_data)
    old, new = value_at(before, key), another_value(before, key)
    check_same_data(folder, before, before)  # unchanged: resumes
    with pytest.raises(UserError) as refused:
        check_same_data(folder, before, with_value(before, key, new))
    message = str(refused.value)
    assert (
        f"was trained with {key}={as_override(old)}; this run has {key}={as_override(new)}"
        in message
    )
    assert f"resume with {key}={as_override(old)}, or start a new run" in message


@pytest.mark.parametrize("key", concrete_keys(shaping.VALID_FILES + shaping.NOT_SHAPING))
def test_data_keys_that_do_not_shape_the_batches_may_change(saved, key):
    folder, saved_data = saved
    check_same_data(folder, saved_data, with_value(saved_data, key, another_value(saved_data, key)))


def test_another_number_of_corpora_is_refused(saved):
    folder, saved_data = saved
    with pytest.raises(UserError, match="trained with 0 data.corpora; this run has 1"):
        check_same_data(folder, saved_data, with_a_corpus(saved_data))


def test_a_checkpoint_from_before_a_data_key_existed_resumes_as_it_was_trained(saved):
    """Saved before data.corpora, data.max_len_ratio and data.tokenizer.prune_target_vocab
    were added: trained with no extra corpus, no ratio filter and the whole vocabulary."""
    folder, saved_data = saved
    old = {k: v for k, v in saved_data.items() if k not in ("corpora", "max_len_ratio")}
    old["tokenizer"] = {
        k: v for k, v in saved_data["tokenizer"].items() if k != "prune_target_vocab"
    }
    as_trained = with_value(saved_data, "data.tokenizer.prune_target_vocab", False)
    check_same_data(folder, old, as_trained)
    with pytest.raises(UserError, match="prune_target_vocab=false; this run has .*=true"):
        check_same_data(
            folder, old, with_value(as_trained, "data.tokenizer.prune_target_vocab", True)
        )


def test_resuming_the_smoke_run_with_another_max_len_ratio_exits_2_naming_it(
    smoke_run, tmp_path, caplog
):
    checkpoints = sorted(p.name for p in (smoke_run / "checkpoints").iterdir())
    overrides = ["experiment=smoke", "trainer.progress_bar=false", f"resume={smoke_run}"]
    with pytest.raises(SystemExit) as exited, caplog.at_level(logging.ERROR):
        with user_errors():
            train(compose_config([*overrides, "data.max_len_ratio=2.5"]), run_dir=tmp_path)
    assert exited.value.code == 2
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is None  # one line, no traceback
    assert (
        "was trained with data.max_len_ratio=null; this run has data.max_len_ratio=2.5. "
        in record.getMessage()
    )
    assert sorted(p.name for p in (smoke_run / "checkpoints").iterdir()) == checkpoints
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
