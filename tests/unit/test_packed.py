"""Search's packed oneDNN products (dist_lstm/model/packed.py): the same numbers as F.linear, and a
packed copy that never outlives a change of its weight."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from dist_lstm.model import packed
from dist_lstm.model.lstm import DecoderLSTM
from dist_lstm.model.packed import ONEDNN_LINEAR, Linear, PackedWeight, weights_changed
from tests.conftest import needs_bf16

pytestmark = pytest.mark.skipif(not ONEDNN_LINEAR, reason="this torch build has no oneDNN")


def test_search_product_uses_a_packed_copy_and_matches_f_linear():
    torch.manual_seed(0)
    layer = Linear(24, 40)
    x = torch.randn(7, 3, 24)  # any leading shape
    with torch.no_grad():
        got = layer(x)
    assert layer.packed._weight is not None, "search did not take the packed path"
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_training_keeps_f_linear_and_packs_nothing():
    torch.manual_seed(0)
    layer, plain = Linear(24, 40), torch.nn.Linear(24, 40)
    plain.load_state_dict(layer.state_dict())  # same keys as nn.Linear
    x = torch.randn(5, 24)
    layer(x).square().sum().backward()
    plain(x).square().sum().backward()
    assert layer.packed._weight is None
    torch.testing.assert_close(layer.weight.grad, plain.weight.grad)


def test_packed_copy_follows_optimizer_steps_and_loaded_weights():
    torch.manual_seed(0)
    layer = Linear(16, 32)
    x = torch.randn(9, 16)
    with torch.no_grad():
        before = layer(x)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x).sum().backward()
    optimizer.step()  # changes weight and bias in place
    with torch.no_grad():
        after_step = layer(x)
    assert not torch.allclose(after_step, before)
    torch.testing.assert_close(after_step, F.linear(x, layer.weight, layer.bias))

    other = Linear(16, 32)
    layer.load_state_dict(other.state_dict())  # copies in place
    with torch.no_grad():
        torch.testing.assert_close(layer(x), other(x))


@needs_bf16
def test_search_under_bf16_autocast_packs_a_bf16_copy_and_matches_autocast_f_linear():
    torch.manual_seed(0)
    layer = Linear(64, 48)
    x = torch.randn(5, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
        expected = F.linear(x, layer.weight, layer.bias)  # autocast casts this one
    assert got.dtype == expected.dtype == torch.bfloat16
    assert layer.packed._weight.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
    with torch.no_grad():  # leaving autocast: an fp32 copy, not the bf16 one
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer.packed._weight.dtype == torch.float32


def test_other_autocast_dtypes_keep_f_linear_and_its_casts():
    torch.manual_seed(0)
    layer = Linear(16, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert layer(torch.randn(3, 16)).dtype == torch.float16
    assert layer.packed._weight is None


@needs_bf16
@pytest.mark.parametrize("onednn", [True, False])
def test_decoder_lstm_search_step_under_bf16_autocast_stays_near_fp32(onednn, monkeypatch):
    """Packed bf16 products, or (without oneDNN) out-of-place products autocast can cast."""
    monkeypatch.setattr(packed, "ONEDNN_LINEAR", onednn)
    torch.manual_seed(0)
    reference = torch.nn.LSTM(24, 32, num_layers=2, batch_first=True)
    cells = DecoderLSTM(24, 32, num_layers=2, batch_first=True)
    cells.load_state_dict(reference.state_dict())
    x = torch.randn(64, 1, 24)
    state = (torch.randn(2, 64, 32), torch.randn(2, 64, 32))
    with torch.no_grad():
        expected = reference(x, state)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = cells(x, state)
    assert all((p._weight is not None) == onednn for p in cells.packed)
    for e, g in zip(expected[0:1] + expected[1], got[0:1] + got[1]):
        torch.testing.assert_close(g.float(), e, rtol=0.05, atol=0.05)


def test_copies_are_rebuilt_after_a_fused_optimizer_step():
    """Fused AdamW updates weights without bumping their version counters: the
    strategy's step calls weights_changed(), without which search would use the old
    weights."""
    torch.manual_seed(0)
    layer = Linear(16, 32)
    x = torch.randn(9, 16)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)
    with torch.no_grad():
        before = layer(x)
    layer(x).sum().backward()
    optimizer.step()
    weights_changed()  # as Strategy.step does
    with torch.no_grad():
        after = layer(x)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, F.linear(x, layer.weight, layer.bias))


def test_weights_whose_storage_keeps_moving_fall_back_to_f_linear():
    """ZeRO-3 hands a module freshly gathered weights at every call: reordering each time
    would cost more than it saves."""
    torch.manual_seed(0)
    layer = Linear(16, 32)
    x = torch.randn(4, 16)
    with torch.no_grad():
        for _ in range(PackedWeight.GIVE_UP_AFTER_MOVES + 1):
            layer.weight.data = layer.weight.data.clone() * 1.5  # new storage
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer.packed.get([layer.weight], [layer.bias]) is None


@pytest.mark.parametrize("rows", [3, 64, 320])  # 320: beam 5 x 64 sentences
def test_decoder_lstm_search_step_matches_nn_lstm_in_fp32(rows):
    torch.manual_seed(0)
    reference = torch.nn.LSTM(24, 32, num_layers=2, batch_first=True)
    cells = DecoderLSTM(24, 32, num_layers=2, batch_first=True)
    cells.load_state_dict(reference.state_dict())
    x = torch.randn(rows, 1, 24)
    state = (torch.randn(2, rows, 32), torch.randn(2, rows, 32))
    with torch.no_grad():
        results = reference(x, state), cells(x, state)
    assert all(p._weight is not None for p in cells.packed)
    for expected, got in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_modules_with_packed_copies_deepcopy_and_pickle_without_them():
    """DeepSpeed copies the model; the copy packs its own weights when it searches."""
    torch.manual_seed(0)
    layer = Linear(8, 8)
    x = torch.randn(2, 8)
    with torch.no_grad():
        layer(x)
    for copied in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert copied.packed._weight is None
        with torch.no_grad():
            torch.testing.assert_close(copied(x), layer(x))
