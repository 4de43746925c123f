"""strategy.precision: autocast inside micro-batches, loss scaling for fp16, start-up checks."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from dist_lstm import precision as prec
from dist_lstm.config.schema import SingleStrategyConfig
from dist_lstm.errors import ConfigError
from dist_lstm.strategy import SingleDeviceStrategy, build_strategy
from dist_lstm.topology import from_environment
from tests.helpers.hardware import bf16_supported, needs_bf16
from tests.helpers.paths import ROOT
from tests.helpers.typed_config import strategy_config

CPU = torch.device("cpu")


def test_fp16_on_cpu_is_refused_with_the_fix():
    fix = "strategy.precision=fp16 is invalid on a CPU.*needs a GPU.*use strategy.precision=bf16"
    with pytest.raises(ConfigError, match=fix):
        prec.check_precision("fp16", CPU)


@pytest.mark.parametrize("name", ["single", "ddp", "deepspeed"])
def test_every_strategy_refuses_a_precision_its_device_cannot_run_before_joining_a_group(name):
    """The base class resolves the precision for every strategy, DeepSpeed included,
    before a process group is joined (a refused rank never leaves the others waiting)."""
    cfg = strategy_config([f"strategy={name}", "strategy.precision=fp16"])
    with pytest.raises(ConfigError, match="strategy.precision=fp16 is invalid on a CPU"):
        build_strategy(cfg, from_environment("cpu", env={}))
    assert not torch.distributed.is_initialized()


BF16_REFUSAL = "strategy.precision=bf16 is not supported.*use strategy.precision=32"


def test_the_probe_accepts_bf16_exactly_where_this_cpu_runs_it():
    """The real probe against a ground truth computed with torch alone (conftest)."""
    if bf16_supported():
        prec.check_precision("bf16", CPU)
    else:
        with pytest.raises(ConfigError, match=BF16_REFUSAL):
            prec.check_precision("bf16", CPU)


# In a fresh process whose oneDNN is capped at AVX2 (no bf16 instructions, as on the CPUs
# where bf16 autocast around nn.LSTM fails): the ground truth, then the real probe.
CAPPED_PROBE = """
import json, torch
from dist_lstm import precision
from dist_lstm.errors import ConfigError
from tests.helpers.hardware import bf16_supported
supported = bf16_supported()
try:
    precision.check_precision("bf16", torch.device("cpu"))
    refusal = None
except ConfigError as exc:
    refusal = str(exc)
print(json.dumps({"supported": supported, "refusal": refusal}))
"""


def test_a_cpu_without_bf16_instructions_is_refused_at_start_up():
    """oneDNN's ONEDNN_MAX_CPU_ISA takes its bf16 kernels away, so the failure the probe
    exists for happens for real here: nothing under test is replaced."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", CAPPED_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["supported"] is False, "the AVX2 cap no longer takes bf16 LSTMs away"
    assert re.search(BF16_REFUSAL, result["refusal"] or ""), result
    assert "LSTM" in result["refusal"]  # oneDNN's own reason is passed on


@needs_bf16
def test_bf16_micro_batch_autocasts_and_trains():
    config = SingleStrategyConfig(precision="bf16")
    strategy = SingleDeviceStrategy(from_environment("cpu", env={}), config)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    strategy.wrap(model, lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    before = model[0].weight.detach().clone()
    with strategy.micro_batch(sync_gradients=True):
        out = strategy.model(torch.randn(3, 4))
        assert out.dtype == torch.bfloat16
        strategy.backward(out.float().pow(2).mean())
    strategy.step()
    assert model[0].weight.dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(before, model[0].weight)


def test_full_precision_has_no_autocast_or_scaler():
    strategy = SingleDeviceStrategy(from_environment("cpu", env={}), SingleStrategyConfig())
    assert strategy.scaler is None
    with strategy.micro_batch(sync_gradients=True):
        assert torch.nn.Linear(2, 2)(torch.randn(1, 2)).dtype == torch.float32


def test_16_bit_cpu_training_caps_onednn_caches_unless_the_user_set_them(monkeypatch):
    """oneDNN's and ideep's per-shape primitive caches grew a bf16 trainer by about 1.4 GB
    (RESULTS.md)."""
    caps = prec.ONEDNN_TRAINING_CACHE_CAPACITIES
    for variable in caps:
        monkeypatch.delenv(variable, raising=False)
    prec.limit_onednn_caches("32", CPU)
    assert not set(caps) & set(os.environ)  # fp32 products go to MKL: nothing to cap
    prec.limit_onednn_caches("bf16", CPU)
    assert {v: os.environ[v] for v in caps} == caps
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "256")
    prec.limit_onednn_caches("bf16", CPU)
    assert os.environ["LRU_CACHE_CAPACITY"] == "256"


@needs_bf16
def test_the_probe_also_works_where_gradients_are_off():
    """A Translator may be built under no_grad; its --precision bf16 check must not fail."""
    with torch.no_grad():
        prec.check_precision("bf16", CPU)


def test_tf32_is_left_alone_on_a_cpu():
    from dist_lstm.precision import configure_tf32

    before = torch.backends.cuda.matmul.allow_tf32
    assert configure_tf32(True, torch.device("cpu")) is False
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.parametrize(
    "capability, enabled, used",
    [((8, 0), True, True), ((8, 0), False, False), ((7, 0), True, False)],
)
def test_tf32_follows_the_key_on_gpus_that_have_it(monkeypatch, capability, enabled, used):
    from dist_lstm.precision import configure_tf32

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not enabled
        assert configure_tf32(enabled, torch.device("cuda", 0)) is used
        if capability >= (8, 0):
            assert torch.backends.cuda.matmul.allow_tf32 is enabled
            assert torch.backends.cudnn.allow_tf32 is enabled
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
