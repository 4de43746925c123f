"""DDP's gradient communication hooks (strategy.comm_hook): what is refused at start-up,
PowerSGD's checkpoint state, and PowerSGD under gloo with many buckets. Exact resume of
whole runs: tests/integration/test_distributed.py and tests/integration/test_resume.py."""

import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dist_lstm.errors import ConfigError
from dist_lstm.strategy import build_strategy
from dist_lstm.strategy.comm_hooks import (
    CommHook,
    PowerSGDCompression,
    check_comm_hook,
    register_comm_hook,
)
from dist_lstm.topology import free_local_port, from_environment
from tests.helpers.paths import ROOT
from tests.helpers.typed_config import strategy_config


def test_bf16_without_a_cuda_build_is_refused_before_the_rendezvous(monkeypatch):
    """torch's bf16 hook registers only in a CUDA build with NCCL >= 2.10: said at
    start-up, naming the key and fp16, not after waiting for a rank 1 that never comes."""
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    check_comm_hook("fp16", torch.device("cpu"))
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(free_local_port())
    cfg = strategy_config(["strategy=ddp", "strategy.comm_hook=bf16", "strategy.timeout_s=20"])
    fix = r"^strategy.comm_hook='bf16'.*use strategy.comm_hook=fp16"
    with pytest.raises(ConfigError, match=fix):
        build_strategy(cfg, from_environment("cpu", env=env))
    assert not dist.is_initialized()


@pytest.fixture
def world_of_one():
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_local_port()}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def two_layers() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))


def compressed_for(steps: int) -> PowerSGDCompression:
    """PowerSGD's state after `steps` steps of a two-layer model (compressing from 2)."""
    torch.manual_seed(0)
    model = DistributedDataParallel(two_layers())
    compression = register_comm_hook(model, CommHook("powersgd", 1, 2))
    for _ in range(steps):
        model(torch.randn(8, 16)).sum().backward()
    return compression


def test_powersgd_state_is_saved_per_parameter_and_restored_as_saved(world_of_one):
    saved = compressed_for(4).state_dict()
    assert saved["iter"] == 4 and saved["world_size"] == 1
    parameters = saved["parameters"]
    assert set(parameters) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert parameters["0.weight"]["error"].shape == (256,)  # error feedback: a gradient's
    assert parameters["0.weight"]["q"].shape == (16,)  # rank 1: one column of 16
    assert set(parameters["0.bias"]) == {"error"}  # vectors are sent whole
    assert parameters["0.weight"]["error"].abs().sum() > 0

    restored = PowerSGDCompression(two_layers(), 1, 1, 2)
    restored.load_state_dict(saved)
    again = restored.state_dict()
    assert (again["iter"], again["stats"]) == (saved["iter"], saved["stats"])
    assert again["rng"][2] == saved["rng"][2] and torch.equal(again["rng"][1], saved["rng"][1])
    for name, kinds in parameters.items():
        for kind, tensor in kinds.items():
            assert torch.equal(again["parameters"][name][kind], tensor), (name, kind)


def test_powersgd_restarts_alike_on_every_rank_at_another_world_size(world_of_one, caplog):
    """Error feedback belongs to one rank: at another world size every rank restarts it,
    those with a file of the checkpoint and those without, to the same step and the same
    random projections (or the ranks' compressions would disagree). Said in the log."""
    saved = compressed_for(4).state_dict()
    module = two_layers()
    had_a_file, had_none = (PowerSGDCompression(module, 3, 1, 2) for _ in range(2))
    with caplog.at_level(logging.WARNING):
        had_a_file.load_state_dict(saved)
        had_none.start_fresh(4)
    assert "written by 1 ranks, this run has 3" in caplog.text
    assert "holds no PowerSGD state for this rank" in caplog.text
    assert "starts afresh at step 4" in caplog.text
    for restarted in (had_a_file.state_dict(), had_none.state_dict()):
        assert restarted["iter"] == 4 and restarted["parameters"] == {}
    assert torch.equal(had_a_file.state_dict()["rng"][1], had_none.state_dict()["rng"][1])

    other_rank = PowerSGDCompression(module, 1, 2, 2)
    with caplog.at_level(logging.WARNING):
        other_rank.load_state_dict(saved)
    assert "strategy.powersgd_rank=1, this run has 2" in caplog.text
    assert other_rank.state_dict()["parameters"] == {}


MANY_BUCKETS = """
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from dist_lstm.strategy.comm_hooks import CommHook, register_comm_hook
from dist_lstm.topology import free_local_port

address = f"tcp://127.0.0.1:{free_local_port()}"
dist.init_process_group("gloo", init_method=address, rank=0, world_size=1)
layers = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(8)])
model = DistributedDataParallel(layers, bucket_cap_mb=0.02)  # a bucket per layer or so
register_comm_hook(model, CommHook("powersgd", 1, 2))
for _ in range(200):
    model(torch.randn(16, 64)).sum().backward()
print("200 steps")
"""


def test_powersgd_under_gloo_with_many_buckets_does_not_deadlock():
    """torch's hook alone hung here within 11-41 steps in 5 of 5 tries: each bucket's
    callbacks hold one of gloo's two threads while waiting for further all-reduces."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", MANY_BUCKETS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # about 3 s when it works; a deadlock never ends
    )
    assert proc.returncode == 0 and "200 steps" in proc.stdout, proc.stderr[-3000:]
