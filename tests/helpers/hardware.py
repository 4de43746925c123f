"""What this machine can run, probed with torch alone."""

import pytest
import torch


def bf16_supported() -> bool:
    """Whether this CPU runs LSTMs under bf16 autocast. Probed here with torch alone, not
    with dist_lstm.precision (under test): a regression there must fail, not skip."""
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    try:
        with torch.enable_grad():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out, _ = lstm(torch.randn(2, 3, 8))
            out.float().sum().backward()
    except RuntimeError:
        return False
    return True


needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="this CPU has no bf16 support")
