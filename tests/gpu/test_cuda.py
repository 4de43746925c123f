"""The CUDA paths, on a GPU: run by benchmarks/gpu_check.sh (DIST_LSTM_TEST_CUDA=1 keeps
the GPU visible to the suite); skipped, saying why, on machines without one.

Exact resume on CUDA is compared with a tolerance, not bitwise: cuDNN's LSTM kernels and
atomic adds in embedding backward do not promise bit-identical sums between runs.
"""

import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from dist_lstm.config.compose import compose_config
from dist_lstm.model import lstm
from dist_lstm.model.encoder import Encoder
from dist_lstm.train.run import train
from dist_lstm.translate.inference import SearchOptions, Translator, load_model

pytestmark = pytest.mark.cuda

# Resume on CUDA may differ from an uninterrupted run by this much per weight.
CUDA_RESUME_ATOL = 1e-4

SMOKE = ["experiment=smoke", "trainer.progress_bar=false", "trainer.device=cuda"]


def test_under_bf16_autocast_the_encoder_lstm_is_cudnns_own_or_fp32_never_fp16():
    """Where cuDNN's RNN takes bfloat16, the encoder runs it untouched (bf16 products as
    promised); where autocast would make it float16, it runs in fp32 outside autocast and
    gives exactly fp32's result (lstm.lstm_outside_autocast)."""
    torch.manual_seed(0)
    encoder = Encoder(100, 16, 32, 2, True, 0.0, 0).cuda().eval()
    src = torch.randint(4, 100, (3, 7), device="cuda")
    lengths = torch.tensor([7, 5, 2])
    packed = pack_padded_sequence(encoder.embedding(src), lengths, batch_first=True)
    with torch.no_grad():
        fp32, _ = nn.LSTM.forward(encoder.lstm, packed)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            probed = lstm.probe_autocast_rnn_dtype(torch.device("cuda"))
            cudnn, _ = nn.LSTM.forward(encoder.lstm, packed)  # autocast's own cast, packed
            ours, _ = encoder.lstm(packed)
            memory = encoder(src, lengths).memory
    print(json.dumps({"cudnn_rnn_dtype_under_bf16_autocast": str(probed)}))
    assert memory.dtype == ours.data.dtype != torch.float16
    if cudnn.data.dtype == torch.float16:
        torch.testing.assert_close(ours.data, fp32.data)  # checks the dtype too
    else:  # bf16 (or fp32) from cuDNN itself: nothing to work around, nothing changed
        torch.testing.assert_close(ours.data, cudnn.data)


def read_records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_smoke_training_on_the_gpu(tmp_path, precision):
    metrics = train(
        compose_config([*SMOKE, f"strategy.precision={precision}", "trainer.max_steps=40"]),
        run_dir=tmp_path,
    )
    records = read_records(tmp_path)
    logs = [r for r in records if "loss" in r]
    assert [r["step"] for r in logs] == [1, 10, 20, 30, 40]  # smoke logs every 10 steps
    assert all(math.isfinite(r["loss"]) for r in logs) and logs[-1]["loss"] < logs[0]["loss"]
    for record in logs:
        assert record["ppl"] == pytest.approx(math.exp(record["loss"]))
    # the run's own peak of allocated GPU memory: a tiny model on this one GPU
    device_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    assert all(0 < r["memory_mb"] < device_mb for r in logs)
    validation = [r for r in records if "val_bleu" in r][-1]
    test = [r for r in records if "test_bleu" in r][-1]
    assert metrics["step"] == validation["step"] == test["test_step"] == 40
    assert validation["val_ppl"] == pytest.approx(math.exp(validation["val_loss"]))
    assert 0.0 <= validation["val_bleu"] <= 100.0 and 0.0 <= test["test_bleu"] <= 100.0
    for key in ("val_loss", "val_bleu"):  # what train() returns is what the run wrote
        assert metrics[key] == validation[key], key
    assert metrics["test_bleu"] == test["test_bleu"]
    assert metrics["best_val_bleu"] == max(r["val_bleu"] for r in records if "val_bleu" in r)


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


def test_checkpoint_rng_brings_this_gpus_stream_back(tmp_path):
    """Through a checkpoint file (weights_only, as resume reads it): dropout masks on
    the GPU after a resume are the ones the uninterrupted run drew."""
    from dist_lstm.checkpoint import rng

    torch.zeros(1, device="cuda")  # CUDA initialized, as in training
    torch.save(rng.capture(), tmp_path / "rank_00000.pt")
    expected = torch.rand(8, device="cuda").tolist()
    torch.rand(1000, device="cuda")  # the run goes on before it is stopped
    state = torch.load(tmp_path / "rank_00000.pt", weights_only=True)
    assert not torch.equal(state["cuda"], torch.cuda.get_rng_state())  # the stream moved on
    rng.restore(state)
    assert torch.rand(8, device="cuda").tolist() == expected
