"""data/shaping.py: every data option is classified once, and preparation's cache key and
stale check follow the owner's list (no files are prepared here: only keys are compared)."""

import dataclasses

import pytest
from omegaconf import OmegaConf

from dist_lstm.config.schema import CorpusConfig, DataConfig
from dist_lstm.data import shaping
from dist_lstm.data.prepared import FORMAT, preparation_options, prepared_location, stale_reason
from tests.helpers.data_options import (
    another_value,
    concrete_keys,
    data_config,
    data_options,
    with_value,
)


def declared_fields(keys):
    """The DataConfig fields `keys` belong to: "corpora[].src" -> "corpora"."""
    return {key.replace("[]", "").split(".")[0] for key in keys}


def test_every_data_option_is_declared_shaping_or_not_exactly_once():
    groups = [shaping.TRAIN_FILES, shaping.VALID_FILES, shaping.BATCHES, shaping.NOT_SHAPING]
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    assert set().union(*map(declared_fields, groups)) == fields
    entries = [key for group in groups for key in group]
    assert len(entries) == len(set(entries))
    # A corpus's fields are each declared: its files shape the data, its weight the batches.
    corpus_fields = {f.name for f in dataclasses.fields(CorpusConfig)}
    declared = {key for key in entries if key.startswith(shaping.EACH_CORPUS)}
    assert {key[len(shaping.EACH_CORPUS) :] for key in declared} == corpus_fields
    assert set(shaping.INPUT_FILES) <= set(shaping.PREPARED_KEYS)


def test_option_values_spell_out_each_corpus_and_tokenizer_key():
    data = data_options(corpora=2)
    values = shaping.option_values(data, shaping.RESUME_KEYS)
    assert values["data.corpora[1].weight"] == 0.5 and values["data.max_len"] == 100
    assert "data.tokenizer.prune_target_vocab" in values and "data.valid_src" not in values
    # A DictConfig reads the same as the resolved dict it was made from.
    assert shaping.option_values(OmegaConf.create(data), shaping.RESUME_KEYS) == values


@pytest.mark.parametrize("key", concrete_keys(shaping.PREPARED_KEYS))
def test_each_prepared_key_names_its_own_folder_and_makes_a_prepared_one_stale(key, tmp_path):
    before = data_options(corpora=1)
    after = data_config(with_value(before, key, another_value(before, key)))
    before = data_config(before)
    assert prepared_location(after) != prepared_location(before)
    manifest = {"format": FORMAT, "options": preparation_options(before)}
    assert stale_reason(tmp_path, manifest, after).startswith(f"it was prepared with {key}=")


@pytest.mark.parametrize("key", concrete_keys(shaping.BATCHES))
def test_batch_keys_reuse_the_prepared_files(key):
    before = data_options(corpora=1)
    after = data_config(with_value(before, key, another_value(before, key)))
    assert prepared_location(after) == prepared_location(data_config(before))
