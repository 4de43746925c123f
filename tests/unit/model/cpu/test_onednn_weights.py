"""Search's oneDNN products on reordered weights (dist_lstm/model/cpu/onednn_weights.py): the same
numbers as F.linear, and a reordered copy that never outlives a change of its weight."""

import copy
import gc
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import _global_optimizer_post_hooks

from dist_lstm.model.cpu import onednn_weights
from dist_lstm.model.cpu.onednn_weights import Linear, ReorderedWeight, reordered_weights
from dist_lstm.model.lstm import DecoderLSTM
from dist_lstm.translate.search import greedy_search
from tests.helpers.hardware import needs_bf16
from tests.helpers.models import SRC, padded, tiny


def _torch_has_onednn_linear() -> bool:
    """Probed here, not taken from the module under test: a regression in its own probe
    must fail these tests, not skip them."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_reorder_linear_weight"
    )


pytestmark = pytest.mark.skipif(
    not _torch_has_onednn_linear(), reason="this torch build has no oneDNN"
)


def test_the_module_finds_onednn_where_torch_has_it():
    assert onednn_weights.ONEDNN_LINEAR


def test_search_product_uses_a_reordered_copy_and_matches_f_linear():
    torch.manual_seed(0)
    layer = Linear(24, 40)
    x = torch.randn(7, 3, 24)  # any leading shape
    with torch.no_grad():
        got = layer(x)
    assert layer.reordered._weight is not None, "search did not take the oneDNN path"
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_training_keeps_f_linear_and_reorders_nothing():
    torch.manual_seed(0)
    layer, plain = Linear(24, 40), torch.nn.Linear(24, 40)
    plain.load_state_dict(layer.state_dict())  # same keys as nn.Linear
    x = torch.randn(5, 24)
    layer(x).square().sum().backward()
    plain(x).square().sum().backward()
    assert layer.reordered._weight is None
    torch.testing.assert_close(layer.weight.grad, plain.weight.grad)


def test_reordered_copy_follows_optimizer_steps_and_loaded_weights():
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
def test_search_under_bf16_autocast_reorders_a_bf16_copy_and_matches_autocast_f_linear():
    torch.manual_seed(0)
    layer = Linear(64, 48)
    x = torch.randn(5, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
        expected = F.linear(x, layer.weight, layer.bias)  # autocast casts this one
    assert got.dtype == expected.dtype == torch.bfloat16
    assert layer.reordered._weight.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
    with torch.no_grad():  # leaving autocast: an fp32 copy, not the bf16 one
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer.reordered._weight.dtype == torch.float32


def test_other_autocast_dtypes_keep_f_linear_and_its_casts():
    torch.manual_seed(0)
    layer = Linear(16, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert layer(torch.randn(3, 16)).dtype == torch.float16
    assert layer.reordered._weight is None


@needs_bf16
@pytest.mark.parametrize("onednn", [True, False])
def test_decoder_lstm_search_step_under_bf16_autocast_stays_near_fp32(onednn, monkeypatch):
    """bf16 products on reordered copies, or (without oneDNN) out-of-place products
    autocast can cast."""
    monkeypatch.setattr(onednn_weights, "ONEDNN_LINEAR", onednn)
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
    assert all((p._weight is not None) == onednn for p in cells.reordered)
    for e, g in zip(expected[0:1] + expected[1], got[0:1] + got[1]):
        torch.testing.assert_close(g.float(), e, rtol=0.05, atol=0.05)


def search(model):
    """Greedy search over SRC, and logits for a fixed hidden state, without gradients."""
    src, lengths = padded(SRC)
    with torch.no_grad():
        tokens = greedy_search(model, src, lengths, 1.5, 3)
        return tokens, model.decoder.logits(torch.ones(2, model.decoder.hidden_size))


def plain_logits(model):
    output = model.decoder.output
    return F.linear(torch.ones(2, model.decoder.hidden_size), output.weight, output.bias)


def train_one_batch(model):
    src, lengths = padded(SRC)
    model.train()
    tgt_in = torch.tensor([[2, 7, 8], [2, 10, 11], [2, 5, 6]])
    model(src, lengths, tgt_in).logsumexp(-1).sum().backward()
    model.eval()


def test_search_sees_a_fused_optimizer_step_with_no_other_call():
    """Fused AdamW updates weights in place without bumping their version counters: the
    model's own optimizer hook must drop its copies, or search would use the old weights."""
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.5, fused=True)
    train_one_batch(model)
    _, before = search(model)  # copies of the weights before the step
    assert model.decoder.output.reordered._weight is not None
    versions = [p._version for p in model.parameters()]
    optimizer.step()
    assert versions == [p._version for p in model.parameters()], "versions tell the change"
    _, after = search(model)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, plain_logits(model))


def test_search_sees_weights_loaded_from_another_model():
    model, other = tiny(), tiny()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-2.0)
    expected = search(other)
    search(model)  # copies of model's own weights
    model.load_state_dict(other.state_dict())
    got = search(model)
    assert got[0] == expected[0]
    torch.testing.assert_close(got[1], expected[1])


@pytest.mark.parametrize("tie", [False, True])
def test_a_step_or_a_load_drops_every_copy_of_the_model(tie):
    model = tiny(tie_embeddings=tie, hidden_size=12)
    search(model)
    copies = list(reordered_weights(model))
    assert len(copies) >= 6 and all(c._weight is not None for c in copies)
    torch.optim.SGD(model.parameters(), lr=0.0).step()  # any torch optimizer's step
    assert all(c._weight is None for c in copies)
    search(model)
    model.load_state_dict(model.state_dict())
    assert all(c._weight is None for c in copies)


def test_a_deleted_model_leaves_no_optimizer_hook_behind():
    gc.collect()
    hooks = len(_global_optimizer_post_hooks)
    model, other = tiny(), tiny()
    assert len(_global_optimizer_post_hooks) == hooks + 2
    search(model)
    search(other)
    train_one_batch(other)
    torch.optim.AdamW(other.parameters(), lr=0.1, fused=True).step()  # may drop both: fine
    del model
    gc.collect()
    assert len(_global_optimizer_post_hooks) == hooks + 1
    del other
    gc.collect()
    assert len(_global_optimizer_post_hooks) == hooks


def test_a_deep_copy_of_the_model_tracks_its_own_weights():
    """ZeRO-3 deep-copies the model for a validation replica: the replica's hooks act on
    the replica, and outlive the original."""
    model = tiny()
    search(model)
    gc.collect()
    hooks = len(_global_optimizer_post_hooks)
    replica = copy.deepcopy(model)
    assert len(_global_optimizer_post_hooks) == hooks + 1
    assert all(c._weight is None for c in reordered_weights(replica))
    search(replica)
    replica.load_state_dict(replica.state_dict())
    assert all(c._weight is None for c in reordered_weights(replica))
    assert all(c._weight is not None for c in reordered_weights(model))

    del model
    gc.collect()
    assert len(_global_optimizer_post_hooks) == hooks  # the original's hook went with it
    optimizer = torch.optim.AdamW(replica.parameters(), lr=0.5, fused=True)
    train_one_batch(replica)
    _, before = search(replica)
    optimizer.step()  # no version bump: only the replica's own hook can tell
    _, after = search(replica)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, plain_logits(replica))


def test_weights_whose_storage_keeps_moving_fall_back_to_f_linear():
    """ZeRO-3 hands a module freshly gathered weights at every call: reordering each time
    would cost more than it saves."""
    torch.manual_seed(0)
    layer = Linear(16, 32)
    x = torch.randn(4, 16)
    with torch.no_grad():
        for _ in range(ReorderedWeight.GIVE_UP_AFTER_MOVES + 1):
            layer.weight.data = layer.weight.data.clone() * 1.5  # new storage
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer.reordered.get([layer.weight], [layer.bias]) is None


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
    assert all(p._weight is not None for p in cells.reordered)
    for expected, got in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_modules_with_reordered_copies_deepcopy_and_pickle_without_them():
    """DeepSpeed copies the model; the copy reorders its own weights when it searches."""
    torch.manual_seed(0)
    layer = Linear(8, 8)
    x = torch.randn(2, 8)
    with torch.no_grad():
        layer(x)
    for copied in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert copied.reordered._weight is None
        with torch.no_grad():
            torch.testing.assert_close(copied(x), layer(x))
