"""The encoder's packing (model/encoder.py pack_by_length): pack_padded_sequence's
enforce_sorted=False result, field for field, without its blocking copy of the order to
the device (on a GPU: tests/gpu/test_cuda.py checks no step waits for the device)."""

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from dist_lstm.model.encoder import pack_by_length


def test_the_same_packed_sequence_as_pack_padded_sequence_unsorted():
    lengths = torch.tensor([3, 7, 1, 7, 5, 3])  # unsorted, ties, a one-token sentence
    embedded = torch.randn(6, 7, 4)
    expected = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
    packed = pack_by_length(embedded, lengths)
    for field in ("data", "batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(packed, field), getattr(expected, field)), field
    assert packed.batch_sizes.device.type == "cpu"  # what cuDNN's packed call reads on the host
