"""The CUDA paths, on a GPU: run by benchmarks/gpu_check.sh (DIST_LSTM_TEST_CUDA=1 keeps
the GPU visible to the suite); skipped, saying why, on machines without one.

Exact resume on CUDA is compared with a tolerance, not bitwise: cuDNN's LSTM kernels and
atomic adds in embedding backward do not promise bit-identical sums between runs.
"""

import json

import pytest
import torch

from dist_lstm.inference import SearchOptions, Translator, load_model
from dist_lstm.model import lstm
from dist_lstm.model.encoder import Encoder
from dist_lstm.run import train
from tests.conftest import compose_config

pytestmark = pytest.mark.cuda

# Resume on CUDA may differ from an uninterrupted run by this much per weight.
CUDA_RESUME_ATOL = 1e-4

SMOKE = ["experiment=smoke", "trainer.progress_bar=false", "trainer.device=cuda"]


def test_encoder_output_under_bf16_autocast_is_bf16_or_fp32():
    encoder = Encoder(100, 16, 32, 2, True, 0.0, 0).cuda().eval()
    src = torch.randint(4, 100, (3, 7), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = encoder(src, torch.tensor([7, 5, 2]))
        probed = lstm.probe_autocast_rnn_dtype(torch.device("cuda"))
    print(json.dumps({"cudnn_rnn_dtype_under_bf16_autocast": str(probed)}))
    assert out.memory.dtype in (torch.bfloat16, torch.float32)


@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_smoke_training_on_the_gpu(tmp_path, precision):
    metrics = train(
        compose_config([*SMOKE, f"strategy.precision={precision}", "trainer.max_steps=40"]),
        run_dir=tmp_path,
    )
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] and all(loss == loss for loss in losses)  # finite, falling
    assert metrics


def test_resume_on_the_gpu_matches_an_uninterrupted_run(tmp_path):
    steps = ["trainer.max_epochs=null", "trainer.val_every_steps=20", "checkpoint.every_steps=20"]
    whole, half = tmp_path / "whole", tmp_path / "half"
    train(compose_config([*SMOKE, *steps, "trainer.max_steps=40"]), run_dir=whole)
    train(compose_config([*SMOKE, *steps, "trainer.max_steps=20"]), run_dir=half)
    train(compose_config([*SMOKE, *steps, "trainer.max_steps=40", "resume=auto"]), run_dir=half)
    a, b = load_model(whole / "checkpoints" / "last"), load_model(half / "checkpoints" / "last")
    assert a.step == b.step == 40
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(x, y, atol=CUDA_RESUME_ATOL, rtol=0, msg=name)


def test_translate_on_the_gpu_matches_the_cpu(tmp_path):
    train(compose_config([*SMOKE, "trainer.max_steps=40"]), run_dir=tmp_path)
    sentences = ["Ein Hund läuft durch den Schnee.", "Zwei Männer spielen Fußball."]
    on = {}
    for device in ("cuda", "cpu"):
        loaded = load_model(tmp_path / "checkpoints" / "last", device)
        on[device] = Translator(loaded, SearchOptions(beam=3)).translate(sentences)
    assert on["cuda"] == on["cpu"]


def test_checkpoint_rng_holds_this_gpus_state_only():
    from dist_lstm.checkpoint import rng

    torch.zeros(1, device="cuda")  # CUDA initialized, as in training
    state = rng.capture()
    assert isinstance(state["cuda"], torch.Tensor)
    rng.restore(state)
