"""The CUDA paths, on a GPU: run by benchmarks/gpu_check.sh (DIST_LSTM_TEST_CUDA=1 keeps
the GPU visible to the suite); skipped, saying why, on machines without one.

Exact resume on CUDA is compared with a tolerance, not bitwise: cuDNN's LSTM kernels and
atomic adds in embedding backward do not promise bit-identical sums between runs.

The smoke trainings these tests read are gpu_check's own `train_<precision>` runs when it
names their folder (DIST_LSTM_GPU_RUNS), so one call trains each once; run alone, the tests
train them here the same way.
"""

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from dist_lstm.config.compose import compose_config
from dist_lstm.model import lstm
from dist_lstm.model.encoder import Encoder, pack_by_length
from dist_lstm.train.run import train
from dist_lstm.translate.inference import SearchOptions, Translator, load_model

pytestmark = pytest.mark.cuda

# Resume on CUDA may differ from an uninterrupted run by this much per weight.
CUDA_RESUME_ATOL = 1e-4
# Beam scores of the same hypothesis on GPU and CPU (fp32, TF32 off) agree to this much;
# where two hypotheses are closer than this, either may win on either device.
SCORE_TOLERANCE = 1e-4

SMOKE = ["experiment=smoke", "trainer.progress_bar=false", "trainer.device=cuda"]


def smoke_run(tmp_path: Path, precision: str) -> Tuple[Path, Dict[str, Any]]:
    """A 40-step smoke run at `precision` and what train() returned: gpu_check's
    train_<precision> run (its result.json) where DIST_LSTM_GPU_RUNS names one, else
    trained here as gpu_check trains it."""
    made = Path(os.environ.get("DIST_LSTM_GPU_RUNS", "/nonexistent")) / f"train_{precision}"
    if (made / "result.json").is_file():
        return made, json.loads((made / "result.json").read_text())
    overrides = [*SMOKE, f"strategy.precision={precision}", "trainer.max_steps=40"]
    return tmp_path, train(compose_config(overrides), run_dir=tmp_path)


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
    run, metrics = smoke_run(tmp_path, precision)
    records = read_records(run)
    logs = [r for r in records if "loss" in r]
    assert [r["step"] for r in logs] == [1, 10, 20, 30, 40]  # smoke logs every 10 steps
    assert all(math.isfinite(r["loss"]) for r in logs) and logs[-1]["loss"] < logs[0]["loss"]
    for record in logs:
        assert record["ppl"] == pytest.approx(math.exp(record["loss"]))
    # the run's own peak of allocated GPU memory: a tiny model on this one GPU
    device_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    assert all(0 < r["memory_mb"] < device_mb for r in logs)
    validation = [r for r in records if "val_bleu" in r][-1]
    assert metrics["step"] == validation["step"] == 40
    assert validation["val_ppl"] == pytest.approx(math.exp(validation["val_loss"]))
    assert 0.0 <= validation["val_bleu"] <= 100.0
    for key in ("val_loss", "val_bleu"):  # what train() returns is what the run wrote
        assert metrics[key] == validation[key], key
    tests = [r for r in records if "test_bleu" in r]
    if precision == "32" or tests:  # gpu_check decodes the test split in its fp32 run only
        test = tests[-1]
        assert test["test_step"] == 40 and 0.0 <= test["test_bleu"] <= 100.0
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
    """fp32 on both (TF32 off, as a run trained with trainer.tf32=false decodes): the same
    translations, except where two hypotheses' scores are closer than the devices' sums
    can tell apart, and then the scores agree."""
    run, _ = smoke_run(tmp_path, "32")
    sentences = ["Ein Hund läuft durch den Schnee.", "Zwei Männer spielen Fußball."]
    on = {}
    try:
        for device in ("cuda", "cpu"):
            loaded = load_model(run / "checkpoints" / "last", device)
            loaded.config["trainer"]["tf32"] = False
            translator = Translator(loaded, SearchOptions(beam=3))
            assert not torch.backends.cuda.matmul.allow_tf32 or device == "cpu"
            on[device] = translator.translate_detailed(sentences)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    for gpu, cpu in zip(on["cuda"], on["cpu"]):
        assert gpu.score == pytest.approx(cpu.score, abs=SCORE_TOLERANCE), gpu.source
        if gpu.translation != cpu.translation:  # a near tie, settled either way
            print(json.dumps({"near_tie": [gpu.translation, cpu.translation]}))


def test_inference_applies_the_runs_tf32_setting(tmp_path):
    run, _ = smoke_run(tmp_path, "32")
    loaded = load_model(run / "checkpoints" / "last", "cuda")
    try:
        for tf32 in (False, True):
            loaded.config["trainer"]["tf32"] = tf32
            Translator(loaded, SearchOptions(beam=1))
            assert torch.backends.cuda.matmul.allow_tf32 is tf32
            assert torch.backends.cudnn.allow_tf32 is tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


CONTIGUOUS_CHUNK = "not part of single contiguous chunk"


def test_a_two_layer_encoders_dropout_on_the_gpu_comes_back_with_the_rng_state():
    """Layer by layer with F.dropout between (model/lstm.py): restoring the CUDA
    generator, as a resume does, gives the same output and gradients; cuDNN's fused call
    drew its masks from a state of its own. No call copies the weights (each layer has
    its own cuDNN buffer)."""
    torch.manual_seed(0)
    encoder = Encoder(100, 16, 32, 2, True, 0.3, 0).cuda().train()
    src = torch.randint(4, 100, (4, 9), device="cuda")
    lengths = torch.tensor([9, 4, 7, 1])
    state = torch.cuda.get_rng_state()
    results = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            torch.cuda.set_rng_state(state)
            encoder.zero_grad()
            memory = encoder(src, lengths).memory
            memory.pow(2).sum().backward()
            results.append([memory, *(p.grad.clone() for p in encoder.lstm.parameters())])
        moved_on = encoder(src, lengths).memory
        encoder.eval()
        packed = pack_padded_sequence(
            encoder.embedding(src).detach(), lengths, batch_first=True, enforce_sorted=False
        )
        with torch.no_grad():
            ours, _ = encoder.lstm(packed)
    assert not [w for w in caught if CONTIGUOUS_CHUNK in str(w.message)]
    for first, again in zip(*results):  # cuDNN's sums may differ in the last bits only
        torch.testing.assert_close(again, first, rtol=0, atol=1e-6)
    assert not torch.allclose(results[0][0], moved_on, rtol=0, atol=1e-3)  # other masks
    with torch.no_grad():  # without dropout, the same as cuDNN's two-layer call
        fused, _ = nn.LSTM.forward(encoder.lstm, packed)
    torch.testing.assert_close(ours.data, fused.data)


def test_packing_sends_the_length_order_without_waiting_for_the_gpu():
    """pack_by_length (the encoder's packing) under CUDA's sync debug mode, where a
    synchronizing call raises; pack_padded_sequence(enforce_sorted=False), which copies
    the order from pageable memory, raises there, so the check can see a wait."""
    embedded = torch.randn(4, 9, 8, device="cuda")
    lengths = torch.tensor([9, 4, 7, 1])
    expected = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
    pack_by_length(embedded, lengths)  # warm-up: the pinned-memory pool's first block
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        packed = pack_by_length(embedded, lengths)
        with pytest.raises(RuntimeError, match="synchroniz"):
            pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for field in ("data", "batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(packed, field), getattr(expected, field)), field


def test_a_batch_goes_to_the_gpu_from_pinned_memory(monkeypatch):
    from dist_lstm.data.build import collate

    pinned = []
    real_pin = torch.Tensor.pin_memory
    monkeypatch.setattr(
        torch.Tensor, "pin_memory", lambda self, *a: pinned.append(self) or real_pin(self, *a)
    )
    batch = collate([(0, [5, 6, 7], [8, 9]), (1, [5], [8, 9, 10, 11])])
    moved = batch.to(torch.device("cuda"))
    assert len(pinned) == 4  # src, tgt_in, tgt_out, tgt_positions
    for name in ("src", "tgt_in", "tgt_out"):
        assert torch.equal(getattr(moved, name).cpu(), getattr(batch, name)), name
    assert moved.src_lengths.device.type == "cpu" and moved.tgt_positions.is_cuda


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
