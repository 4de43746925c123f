"""nn.LSTM under bf16 autocast: where autocast would run it in float16 (cuDNN's RNN
wrapper), the LSTM layers run in fp32 outside autocast instead."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from dist_lstm.model import lstm
from dist_lstm.model.lstm import DecoderLSTM, EncoderLSTM


@pytest.fixture
def float16_under_bf16(monkeypatch):
    """Pretend this machine's autocast RNN gives float16 (as cuDNN's wrapper has)."""
    monkeypatch.setattr(lstm, "_AUTOCAST_RNN_DTYPES", {})
    monkeypatch.setattr(lstm, "probe_autocast_rnn_dtype", lambda device: torch.float16)


def encoder_and_input():
    torch.manual_seed(0)
    encoder = EncoderLSTM(8, 6, num_layers=2, bidirectional=True, batch_first=True).eval()
    x = torch.randn(3, 5, 8)
    return encoder, pack_padded_sequence(x, torch.tensor([5, 3, 2]), batch_first=True)


def test_no_autocast_and_fp32_probes_leave_the_lstm_alone(monkeypatch):
    monkeypatch.setattr(lstm, "_AUTOCAST_RNN_DTYPES", {})
    assert not lstm.lstm_outside_autocast(torch.device("cpu"))
    monkeypatch.setattr(lstm, "probe_autocast_rnn_dtype", lambda device: torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lstm.lstm_outside_autocast(torch.device("cpu"))


def test_the_real_probe_reports_an_output_dtype():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dtype = lstm.probe_autocast_rnn_dtype(torch.device("cpu"))
    assert dtype in (torch.bfloat16, torch.float32)  # what this CPU's autocast does


def test_encoder_runs_in_fp32_outside_autocast_when_it_would_be_float16(float16_under_bf16):
    encoder, packed = encoder_and_input()
    with torch.no_grad():
        reference, (h_ref, _) = encoder(packed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert lstm.lstm_outside_autocast(torch.device("cpu"))
            output, (h, _) = encoder(packed)
    assert output.data.dtype == torch.float32 and h.dtype == torch.float32
    torch.testing.assert_close(output.data, reference.data)  # fp32 outside autocast: exact
    torch.testing.assert_close(h, h_ref)


def test_decoder_whole_sequence_runs_in_fp32_too(float16_under_bf16):
    torch.manual_seed(0)
    decoder = DecoderLSTM(8, 6, num_layers=2, batch_first=True).eval()
    x = torch.randn(3, 4, 8)
    state = (torch.zeros(2, 3, 6), torch.zeros(2, 3, 6))
    with torch.no_grad():
        reference, _ = decoder(x, state)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, _ = decoder(x, state)
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, reference)
