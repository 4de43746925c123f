"""Topology from the launcher's environment and the strategy each config picks."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from dist_lstm.config.compose import CONF_DIR, compose_config
from dist_lstm.config.schema import StrategyConfig
from dist_lstm.errors import ConfigError
from dist_lstm.strategy import SingleDeviceStrategy, build_strategy
from dist_lstm.topology import from_environment, loopback_rendezvous
from tests.helpers.hardware import needs_bf16
from tests.helpers.typed_config import strategy_config


def test_plain_process_is_rank_zero_of_one():
    topo = from_environment("cpu", env={})
    assert (topo.rank, topo.world_size, topo.local_rank, topo.is_main) == (0, 1, 0, True)
    assert topo.device == torch.device("cpu")


def test_launcher_environment_is_read():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1",
    }
    topo = from_environment("cpu", env=env)
    assert (topo.rank, topo.world_size, topo.local_rank, topo.distributed) == (3, 4, 1, True)


def test_world_size_without_rendezvous_address_is_explained():
    with pytest.raises(ConfigError, match="MASTER_ADDR/MASTER_PORT are not set.*torchrun"):
        from_environment("cpu", env={"RANK": "0", "WORLD_SIZE": "2"})


def test_each_strategy_option_is_one_entry_with_its_schema_and_yaml():
    """conf/strategy/NAME.yaml, the schema NAME_schema that file starts from and the
    registry entry that builds it: no option without the other two."""
    from omegaconf import OmegaConf

    from dist_lstm.config.schema import STRATEGY_SCHEMAS
    from dist_lstm.strategy import STRATEGIES

    files = {path.stem for path in (CONF_DIR / "strategy").glob("*.yaml")}
    assert files == set(STRATEGIES) == set(STRATEGY_SCHEMAS)
    for name, entry in STRATEGIES.items():
        assert entry.name == name and entry.schema is STRATEGY_SCHEMAS[name]
        assert f"{name}_schema" in OmegaConf.load(CONF_DIR / "strategy" / f"{name}.yaml").defaults
        composed = compose_config([f"strategy={name}"]).strategy
        assert composed.name == name and OmegaConf.get_type(composed) is entry.schema


def test_auto_is_single_without_a_launcher():
    strategy = build_strategy(strategy_config(), from_environment("cpu", env={}))
    assert isinstance(strategy, SingleDeviceStrategy)
    # Its keys come from the config, whose defaults are the schema's (no second default).
    assert strategy.clip_grad_norm == StrategyConfig.clip_grad_norm == 1.0
    assert strategy.timeout_s is None  # one process waits for no other


def test_single_under_a_launcher_names_the_fix():
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    with pytest.raises(ConfigError, match="use strategy=ddp"):
        build_strategy(strategy_config(["strategy=single"]), from_environment("cpu", env=env))


def test_cuda_request_without_cuda_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="trainer.device=cuda is invalid"):
        from_environment("cuda", env={})


def test_deepspeed_launcher_local_rank_flag_is_dropped():
    from dist_lstm.topology import drop_local_rank_argument

    argv = ["train.py", "--local_rank=1", "strategy=deepspeed", "--local_rank", "0", "seed=3"]
    assert drop_local_rank_argument(argv) == ["train.py", "strategy=deepspeed", "seed=3"]


def test_zero_stage_outside_0_to_3_is_refused():
    from dist_lstm.config import validate_config

    cfg = compose_config(["strategy=deepspeed", "strategy.zero_stage=4"])
    with pytest.raises(ConfigError, match="strategy.zero_stage"):
        validate_config(cfg)
    validate_config(compose_config(["strategy=deepspeed", "strategy.zero_stage=3"]))


def test_padding_targets_for_zero3_leaves_the_loss_and_gradients_unchanged():
    """ZeRO-3 runs every rank's decoder for the same number of steps by PAD-extending
    targets; the loss must not see the padding."""
    from dist_lstm.batch import Batch
    from dist_lstm.model.seq2seq import build_model

    cfg = compose_config(["model=tiny", "model.dropout=0.0"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 12, 12, 0)
    batch = Batch(
        src=torch.tensor([[5, 6, 7], [8, 9, 0]]),
        src_lengths=torch.tensor([3, 2]),
        tgt_in=torch.tensor([[2, 4, 5], [2, 6, 0]]),  # BOS = 2
        tgt_out=torch.tensor([[4, 5, 3], [6, 3, 0]]),  # EOS = 3
        indices=torch.tensor([0, 1]),
    )

    def loss_and_grads(b):
        model.zero_grad()
        loss, tokens = model(b.src, b.src_lengths, b.tgt_in, b.tgt_out)  # as training does
        loss.backward()
        return loss.detach(), tokens, [p.grad.clone() for p in model.parameters()]

    padded = batch.with_target_length(7)
    assert padded.tgt_in.shape == (2, 7) and padded.tgt_out.shape == (2, 7)
    assert batch.with_target_length(2) is batch
    loss, tokens, grads = loss_and_grads(batch)
    padded_loss, padded_tokens, padded_grads = loss_and_grads(padded)
    assert tokens == padded_tokens
    torch.testing.assert_close(padded_loss, loss)
    for grad, padded_grad in zip(grads, padded_grads):
        torch.testing.assert_close(padded_grad, grad)


@pytest.fixture
def no_launcher(monkeypatch):
    """This process as `python train.py` sees it without a launcher, whatever the shell
    exported; a MASTER_ADDR left there without WORLD_SIZE names no job."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.setenv(name, "")  # recorded, so what the test exports is undone
        monkeypatch.delenv(name)
    monkeypatch.setenv("MASTER_ADDR", "no-such-host.invalid")


def test_ddp_in_a_plain_process_is_a_world_of_one_on_this_machine(no_launcher):
    """No launcher: the process group meets on 127.0.0.1 instead of failing for want of
    MASTER_ADDR; one left in the shell without WORLD_SIZE names no job and is ignored."""
    topology = from_environment("cpu")
    assert topology.master_addr is None
    strategy = build_strategy(strategy_config(["strategy=ddp", "strategy.timeout_s=42"]), topology)
    try:
        assert strategy.timeout_s == 42  # how long its ranks wait for each other's data
        assert (dist.get_rank(), dist.get_world_size()) == (0, 1)
        assert strategy.all_reduce_sum(torch.tensor([2.0])).item() == 2.0
        assert os.environ["LOCAL_RANK"] == "0"  # DeepSpeed's engine insists on it
    finally:
        strategy.teardown()
    assert not dist.is_initialized()


@needs_bf16
def test_deepspeed_runs_and_reports_the_configured_precision_through_its_engine(no_launcher):
    """bf16 reaches DeepSpeed's own bf16 section (as its ZeRO checkpoints were written) and
    `strategy.precision`, which the run logs and records; training adds no autocast or
    scaler on top of the engine's cast, while decoding autocasts like every strategy."""
    from dist_lstm.strategy.deepspeed import deepspeed_config

    cfg = strategy_config(["strategy=deepspeed", "strategy.precision=bf16"])
    strategy = build_strategy(cfg, from_environment("cpu"))
    try:
        assert strategy.precision == "bf16" and strategy.scaler is None
        sections = deepspeed_config(strategy.zero_stage, 1.0, strategy.precision)
        assert sections["bf16"] == {"enabled": True} and sections["fp16"] == {"enabled": False}
        layer = torch.nn.Linear(2, 2)
        with strategy.training_autocast():
            assert layer(torch.randn(1, 2)).dtype == torch.float32  # the engine casts
        with strategy.decoding_autocast():
            assert layer(torch.randn(1, 2)).dtype == torch.bfloat16
    finally:
        strategy.teardown()


def test_loopback_rendezvous_leaves_a_launched_process_alone():
    env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    launched = from_environment("cpu", env=env)
    assert loopback_rendezvous(launched) == launched
    plain = loopback_rendezvous(from_environment("cpu", env={}))
    assert plain.master_addr == "127.0.0.1" and 0 < plain.master_port < 65536


LOSES_ITS_PEER = """
import os, sys
import torch
import torch.distributed as dist
from dist_lstm.strategy.base import peer_lost

rank = int(sys.argv[2])
dist.init_process_group("gloo", init_method=f"file://{sys.argv[1]}", rank=rank, world_size=2)
dist.barrier()
if rank == 1:
    os._exit(0)  # the process is gone, as when its node dies
try:
    dist.all_reduce(torch.ones(4))
except Exception as exc:
    print("peer lost:", peer_lost(exc))
print("own fault:", peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied")))
"""


def test_a_collective_that_loses_its_peer_is_told_apart_from_a_fault_of_its_own(tmp_path):
    args = [sys.executable, "-c", LOSES_ITS_PEER, str(tmp_path / "store")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen([*args, str(r)], env=env, stdout=subprocess.PIPE, text=True)
        for r in (0, 1)
    ]
    out = ranks[0].communicate(timeout=120)[0]
    ranks[1].wait(timeout=120)
    assert "peer lost: True" in out and "own fault: False" in out
