"""strategy.precision: autocast inside micro-batches, loss scaling for fp16, start-up checks."""

import os

import pytest
import torch

from dist_lstm import precision as prec
from dist_lstm.errors import ConfigError
from dist_lstm.strategy import SingleDeviceStrategy
from dist_lstm.topology import from_environment
from tests.conftest import needs_bf16

CPU = torch.device("cpu")


def test_fp16_on_cpu_is_refused_with_the_fix():
    fix = "strategy.precision=fp16 is invalid on a CPU.*needs a GPU.*use strategy.precision=bf16"
    with pytest.raises(ConfigError, match=fix):
        prec.check_precision("fp16", CPU)


def test_unsupported_bf16_is_detected_at_start_up(monkeypatch):
    def broken(precision, device):
        raise RuntimeError("could not create a primitive descriptor for an LSTM forward")

    monkeypatch.setattr(prec, "_probe_lstm", broken)
    fix = "strategy.precision=bf16 is not supported.*use strategy.precision=32"
    with pytest.raises(ConfigError, match=fix):
        prec.check_precision("bf16", CPU)


@needs_bf16
def test_bf16_micro_batch_autocasts_and_trains():
    strategy = SingleDeviceStrategy(from_environment("cpu", env={}), 1.0, precision="bf16")
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    strategy.wrap(model, lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    before = model[0].weight.detach().clone()
    with strategy.micro_batch(sync_gradients=True):
        out = strategy.model(torch.randn(3, 4))
        assert out.dtype == torch.bfloat16
        strategy.backward(out.float().pow(2).mean())
    strategy.step()
    assert model[0].weight.dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(before, model[0].weight)


def test_full_precision_has_no_autocast_or_scaler():
    strategy = SingleDeviceStrategy(from_environment("cpu", env={}), 1.0)
    assert strategy.scaler is None
    with strategy.micro_batch(sync_gradients=True):
        assert torch.nn.Linear(2, 2)(torch.randn(1, 2)).dtype == torch.float32


def test_16_bit_cpu_training_caps_onednn_caches_unless_the_user_set_them(monkeypatch):
    """oneDNN's and ideep's per-shape primitive caches grew a bf16 trainer by about 1.4 GB
    (RESULTS.md)."""
    caps = prec.ONEDNN_TRAINING_CACHE_CAPACITIES
    for variable in caps:
        monkeypatch.delenv(variable, raising=False)
    prec.limit_onednn_caches("32", CPU)
    assert not set(caps) & set(os.environ)  # fp32 products go to MKL: nothing to cap
    prec.limit_onednn_caches("bf16", CPU)
    assert {v: os.environ[v] for v in caps} == caps
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "256")
    prec.limit_onednn_caches("bf16", CPU)
    assert os.environ["LRU_CACHE_CAPACITY"] == "256"


@needs_bf16
def test_the_probe_also_works_where_gradients_are_off():
    """A Translator may be built under no_grad; its --precision bf16 check must not fail."""
    with torch.no_grad():
        prec.check_precision("bf16", CPU)


def test_tf32_is_left_alone_on_a_cpu():
    from dist_lstm.precision import configure_tf32

    before = torch.backends.cuda.matmul.allow_tf32
    assert configure_tf32(True, torch.device("cpu")) is False
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.parametrize(
    "capability, enabled, used",
    [((8, 0), True, True), ((8, 0), False, False), ((7, 0), True, False)],
)
def test_tf32_follows_the_key_on_gpus_that_have_it(monkeypatch, capability, enabled, used):
    from dist_lstm.precision import configure_tf32

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not enabled
        assert configure_tf32(enabled, torch.device("cuda", 0)) is used
        if capability >= (8, 0):
            assert torch.backends.cuda.matmul.allow_tf32 is enabled
            assert torch.backends.cudnn.allow_tf32 is enabled
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
