"""The encoder's dropout between LSTM layers on a GPU: one call per layer with F.dropout
between (model/lstm.py EncoderLSTM), so the masks come from torch's generator, which a
checkpoint restores, not from cuDNN's own dropout state, which no checkpoint holds.

Run here on the CPU: the layer-by-layer path is the same code whatever the device (one
torch._VF.lstm call per layer); on a GPU tests/gpu/test_cuda.py runs it through cuDNN."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from dist_lstm.model.cpu.lstm import packed_recurrence
from dist_lstm.model.encoder import Encoder
from dist_lstm.model.lstm import EncoderLSTM

LENGTHS = torch.tensor([3, 7, 1, 7, 5])  # unsorted, with ties and a one-token sentence


def packed_inputs(seed: int = 0) -> torch.nn.utils.rnn.PackedSequence:
    x = torch.randn(5, 7, 6, dtype=torch.double, generator=torch.Generator().manual_seed(seed))
    return pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)


def two_layer_lstm(**kwargs) -> EncoderLSTM:
    torch.manual_seed(0)
    options = dict(num_layers=2, batch_first=True, bidirectional=True, dropout=0.3)
    return EncoderLSTM(6, 8, **{**options, **kwargs}).double()


def test_state_dict_keys_are_nn_lstms_so_old_checkpoints_load():
    reference = torch.nn.LSTM(6, 8, num_layers=2, bidirectional=True, dropout=0.3)
    lstm = EncoderLSTM(6, 8, num_layers=2, bidirectional=True, dropout=0.3)
    assert list(lstm.state_dict()) == list(reference.state_dict())
    lstm.load_state_dict(reference.state_dict())  # strict
    encoder = Encoder(50, 8, 16, 2, True, 0.3, 0)
    assert list(encoder.state_dict()) == [
        "embedding.weight",
        *(f"lstm.{key}" for key in reference.state_dict()),
    ]


@pytest.mark.parametrize(
    "layers, dropout, device, layer_by_layer",
    [
        (2, 0.3, "cuda", True),
        (2, 0.0, "cuda", False),  # nothing random between layers: cuDNN's fused call
        (1, 0.3, "cuda", False),  # no layer in between (the smoke model)
        (2, 0.3, "cpu", False),  # CPU: its own recurrence (training) or nn.LSTM (search)
    ],
)
@pytest.mark.filterwarnings("ignore:dropout option adds dropout after all but last")
def test_which_calls_run_layer_by_layer(layers, dropout, device, layer_by_layer):
    lstm = EncoderLSTM(6, 8, num_layers=layers, dropout=dropout)
    assert lstm.runs_layer_by_layer(torch.device(device)) is layer_by_layer


@pytest.mark.parametrize("bidirectional", [True, False])
def test_layer_by_layer_without_dropout_is_nn_lstms_fused_call(bidirectional):
    lstm = two_layer_lstm(bidirectional=bidirectional).eval()
    packed = packed_inputs()
    with torch.no_grad():
        fused_out, (fused_h, fused_c) = torch.nn.LSTM.forward(lstm, packed)
        out, (h, c) = lstm._layer_by_layer(packed)
    torch.testing.assert_close(out.data, fused_out.data)
    torch.testing.assert_close(h, fused_h)
    torch.testing.assert_close(c, fused_c)


def test_layer_by_layer_dropout_is_torchs_generator_as_the_cpu_recurrence_draws_it():
    """Same generator state, same masks: the GPU path's outputs equal the CPU training
    path's (which has always used F.dropout); another state gives other masks."""
    lstm = two_layer_lstm().train()
    packed = packed_inputs()
    state = torch.get_rng_state()
    out, (h, c) = lstm._layer_by_layer(packed)
    torch.set_rng_state(state)
    cpu_out, (cpu_h, cpu_c) = packed_recurrence(lstm, packed)
    torch.testing.assert_close(out.data, cpu_out.data)
    torch.testing.assert_close(h, cpu_h)
    torch.testing.assert_close(c, cpu_c)
    other, _ = lstm._layer_by_layer(packed)  # the generator has moved on
    assert not torch.allclose(other.data, out.data)


def test_a_two_layer_encoders_output_with_dropout_comes_back_with_the_rng_state(monkeypatch):
    """Through Encoder.forward with the GPU's dispatch: restoring torch's RNG state (as a
    resume does) gives the same output; cuDNN's fused call would not."""
    monkeypatch.setattr(EncoderLSTM, "runs_layer_by_layer", lambda self, device: True)
    calls = []
    real = EncoderLSTM._layer_by_layer
    monkeypatch.setattr(
        EncoderLSTM, "_layer_by_layer", lambda self, packed: calls.append(1) or real(self, packed)
    )
    torch.manual_seed(0)
    encoder = Encoder(50, 8, 16, 2, True, 0.3, 0).train()
    src = torch.randint(4, 50, (5, 7))
    state = torch.get_rng_state()
    with torch.no_grad():  # no autograd: the CPU's own training recurrence stays out
        first = encoder(src, LENGTHS)
        torch.set_rng_state(state)
        again = encoder(src, LENGTHS)
        moved_on = encoder(src, LENGTHS)
    assert len(calls) == 3  # every call went layer by layer
    assert torch.equal(first.memory, again.memory)
    assert torch.equal(first.final[0], again.final[0])
    assert not torch.equal(first.memory, moved_on.memory)
