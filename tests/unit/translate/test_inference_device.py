"""What the Translator sets up for its device: fp32 products as the run trained them
(trainer.tf32), and source batches copied to a GPU from pinned memory (on a GPU:
tests/gpu/test_cuda.py)."""

import pytest
import torch

from dist_lstm.model import build_model
from dist_lstm.translate import inference
from dist_lstm.translate.inference import LoadedModel, SearchOptions, Translator
from tests.helpers.configs import model_config


def loaded_model(config) -> LoadedModel:
    model = build_model(model_config(), 20, 20).eval()
    return LoadedModel(model, None, config, {}, 0, None)  # ids in, ids out: no tokenizer


@pytest.mark.parametrize("tf32", [False, True])
def test_the_translator_applies_the_runs_tf32_setting(monkeypatch, tf32):
    calls = []
    monkeypatch.setattr(inference, "configure_tf32", lambda on, device: calls.append((on, device)))
    Translator(loaded_model({"data": {"max_len": 20}, "trainer": {"tf32": tf32}}), SearchOptions())
    assert calls == [(tf32, torch.device("cpu"))]


def test_a_checkpoint_without_the_key_gets_trainings_default(monkeypatch):
    calls = []
    monkeypatch.setattr(inference, "configure_tf32", lambda on, device: calls.append(on))
    Translator(loaded_model({"data": {"max_len": 20}}), SearchOptions())
    assert calls == [True]  # the schema's default, trainer.tf32=true


def test_padded_sources_stay_unpinned_on_a_cpu(monkeypatch):
    translator = Translator(loaded_model({"data": {"max_len": 20}}), SearchOptions())
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: pytest.fail("pinned"))
    src, lengths = translator._padded([[5, 6, 7], [8]])
    assert src.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
