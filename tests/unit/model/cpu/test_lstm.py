"""The model's CPU recurrences (dist_lstm/model/cpu/lstm.py), reached through the LSTM
layers that run them, against nn.LSTM's own kernels: the same values and gradients with
the same parameters and state-dict keys."""

import pytest
import torch


def test_decoder_lstm_cells_match_nn_lstm_in_values_and_gradients():
    from dist_lstm.model.lstm import DecoderLSTM

    torch.manual_seed(0)
    reference = torch.nn.LSTM(6, 8, num_layers=2, batch_first=True).double()
    cells = DecoderLSTM(6, 8, num_layers=2, batch_first=True).double()
    cells.load_state_dict(reference.state_dict())  # same parameters, same keys
    x = torch.randn(3, 1, 6, dtype=torch.double)
    state = (torch.randn(2, 3, 8, dtype=torch.double), torch.randn(2, 3, 8, dtype=torch.double))
    results = []
    for lstm in (reference, cells):
        out, (h, c) = lstm(x, state)
        (out.sum() + h.pow(2).sum() + c.sum()).backward()
        results.append([out, h, c, *(p.grad for p in lstm.parameters())])
    for expected, got in zip(*results):
        torch.testing.assert_close(got, expected)
    with torch.no_grad():  # search's path: no gradients, GEMMs into one gates tensor
        for expected, got in zip(reference(x, state), cells(x, state)):
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_encoder_lstm_recurrence_matches_nn_lstm_in_values_and_gradients(bidirectional):
    """The packed recurrence the encoder runs when training on CPU against nn.LSTM's own."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from dist_lstm.model.lstm import EncoderLSTM

    torch.manual_seed(0)
    kwargs = dict(num_layers=2, batch_first=True, bidirectional=bidirectional)
    reference = torch.nn.LSTM(6, 8, **kwargs).double()
    own = EncoderLSTM(6, 8, **kwargs).double()
    own.load_state_dict(reference.state_dict())  # same parameters, same keys
    lengths = torch.tensor([3, 7, 1, 7, 5])  # unsorted, with ties and a one-token sentence
    x = torch.randn(5, 7, 6, dtype=torch.double)
    results = []
    for lstm in (reference, own):
        inputs = x.clone().requires_grad_()
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)
        (out.pow(2).sum() + h.pow(2).sum() + c.sum()).backward()
        results.append([out, h, c, inputs.grad, *(p.grad for p in lstm.parameters())])
    for expected, got in zip(*results):
        torch.testing.assert_close(got, expected)
