"""load_checkpoint: full fp32 weights in canonical keys from any checkpoint (DCP folder,
DeepSpeed ZeRO folder, exported file), and a clear error for anything else."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from dist_lstm import cli
from dist_lstm.checkpoint import load_checkpoint
from dist_lstm.checkpoint.manager import CheckpointManager
from dist_lstm.checkpoint.metadata import run_metadata
from dist_lstm.config.schema import SingleStrategyConfig
from dist_lstm.errors import UserError
from dist_lstm.model import build_model
from dist_lstm.strategy import SingleDeviceStrategy
from dist_lstm.topology import from_environment
from tests.helpers.configs import model_config
from tests.helpers.gpu_saved import save_as_on_a_gpu
from tests.helpers.paths import ROOT

MODEL = model_config()
TOKENIZER = {"src": b"src-model", "tgt": b"tgt-model"}


def save_dcp_checkpoint(run_dir, dtype=torch.float32):
    """A checkpoint as training writes it (strategy + manager), after one optimizer step
    so the optimizer's state sits beside the model's in the DCP files; returns the
    folder and the model's own state dict."""
    torch.manual_seed(0)
    model = build_model(MODEL, 11, 13).to(dtype)
    strategy = SingleDeviceStrategy(from_environment("cpu", env={}), SingleStrategyConfig())
    strategy.wrap(model, lambda m: torch.optim.Adam(m.parameters(), lr=0.1))
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    strategy.optimizer.step()
    manager = CheckpointManager(run_dir, keep_last=1)
    manager.register_model_state(strategy)
    manager.run_metadata = run_metadata({"model": MODEL, "seed": 1}, {}, TOKENIZER, None, "32")
    folder = manager.save(5, metrics={"val_bleu": 2.0}, world_size=1)
    return folder, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def dcp_checkpoint(tmp_path_factory):
    return save_dcp_checkpoint(tmp_path_factory.mktemp("run"))


def assert_same_weights(loaded, expected):
    assert loaded.keys() == expected.keys()  # canonical keys, no optimizer entries
    for name, tensor in expected.items():
        assert loaded[name].dtype == torch.float32, name
        assert torch.equal(loaded[name], tensor.float()), name


def test_dcp_folder_gives_the_models_weights_and_its_metadata(dcp_checkpoint):
    folder, expected = dcp_checkpoint
    payload = load_checkpoint(folder)
    assert_same_weights(payload["model"], expected)
    assert payload["config"]["model"] == MODEL and payload["tokenizer"] == TOKENIZER
    assert payload["step"] == 5 and payload["metrics"] == {"val_bleu": 2.0}


def test_bf16_weights_come_back_as_fp32(tmp_path):
    """Inference and averaging expect fp32 whatever the training dtype was."""
    folder, expected = save_dcp_checkpoint(tmp_path, dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in expected.values())
    assert_same_weights(load_checkpoint(folder)["model"], expected)


def test_exported_file_round_trips(dcp_checkpoint, tmp_path):
    """`dist-lstm export` writes one weights_only-loadable file that reads back the same."""
    folder, expected = dcp_checkpoint
    out = tmp_path / "model.pt"
    assert cli.main(["export", str(folder), str(out)]) == 0
    payload = load_checkpoint(out)
    assert_same_weights(payload["model"], expected)
    assert payload["config"]["model"] == MODEL and payload["tokenizer"] == TOKENIZER
    assert payload["exported_from"] == str(folder) and "world_size" not in payload
    assert torch.load(out, weights_only=True).keys() == payload.keys()


def test_a_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(UserError, match=f"checkpoint not found: {tmp_path / 'nowhere.pt'}"):
        load_checkpoint(tmp_path / "nowhere.pt")


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(UserError, match="notes.pt is not a dist-lstm checkpoint"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)  # a torch file, but not ours
    with pytest.raises(UserError, match="other.pt is not a dist-lstm checkpoint.*no model"):
        load_checkpoint(other)


def test_a_folder_without_its_complete_marker_is_refused(dcp_checkpoint, tmp_path):
    """An interrupted save must never be read as weights."""
    folder, _ = dcp_checkpoint
    copy = shutil.copytree(folder, tmp_path / "step_00000005")
    (copy / "COMPLETE").unlink()
    with pytest.raises(UserError, match="not a complete checkpoint"):
        load_checkpoint(copy)


def test_a_folder_whose_state_holds_neither_format_is_refused(dcp_checkpoint, tmp_path):
    folder, _ = dcp_checkpoint
    copy = shutil.copytree(folder, tmp_path / "step_00000005")
    shutil.rmtree(copy / "state")
    (copy / "state").mkdir()
    with pytest.raises(UserError, match="holds neither DCP nor DeepSpeed files"):
        load_checkpoint(copy)


# DeepSpeed keeps module-level process-group state that a second engine in the same
# process trips over, so each stage runs in a fresh single process (a world of 1).
DEEPSPEED_SCRIPT = """
import json, sys, torch
from dist_lstm.checkpoint import load_checkpoint
from dist_lstm.checkpoint.manager import CheckpointManager
from dist_lstm.config.schema import DeepSpeedStrategyConfig
from dist_lstm.model import build_model
from dist_lstm.strategy.deepspeed import DeepSpeedStrategy
from dist_lstm.topology import from_environment

model_cfg, stage, run_dir = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
model = build_model(model_cfg, 11, 13)
config = DeepSpeedStrategyConfig(clip_grad_norm=0.0, zero_stage=stage)
strategy = DeepSpeedStrategy(from_environment("cpu", env={}), config)
strategy.wrap(model, lambda m: torch.optim.Adam(m.parameters(), lr=0.1))
manager = CheckpointManager(run_dir, keep_last=1)
manager.register_model_state(strategy)
folder = manager.save(3)
files = sorted(p.name for p in (folder / "state" / "zero").iterdir())
loaded = load_checkpoint(folder)["model"]
expected = model.state_dict()
same = loaded.keys() == expected.keys() and all(
    loaded[k].dtype == torch.float32 and torch.equal(loaded[k], expected[k]) for k in expected
)
strategy.teardown()
print("RESULT", json.dumps({"files": files, "same": same}))
"""


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="the deepspeed extra is not installed"
)
@pytest.mark.parametrize("stage", [0, 1])
def test_deepspeed_zero_folder_gives_the_models_weights(tmp_path, stage):
    """Stage 0 keeps full weights in the model file; stage 1 partitions fp32 masters
    in optimizer files, which DeepSpeed's zero_to_fp32 reassembles."""
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    proc = subprocess.run(
        [sys.executable, "-c", DEEPSPEED_SCRIPT, json.dumps(MODEL), str(stage), str(tmp_path)],
        cwd=ROOT,
        env={**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    has_optimizer_partitions = any(f.endswith("optim_states.pt") for f in result["files"])
    assert has_optimizer_partitions == (stage > 0)  # each stage takes its own branch
    assert result["same"]


# What torch.load says for a GPU-tagged storage on a machine without CUDA.
NO_CUDA_HERE = "Attempting to deserialize object on a CUDA device"


def test_a_zero_stage_0_model_file_saved_on_a_gpu_is_read_onto_the_cpu(tmp_path):
    """A GPU-trained run's weights must load where there is no GPU: the file's storages
    are tagged cuda:0, which a plain torch.load cannot place here."""
    from dist_lstm.checkpoint import consolidate

    zero = tmp_path / "state" / "zero"
    zero.mkdir(parents=True)
    weights = {"w": torch.arange(4.0), "v": torch.ones(2, 3)}
    model_file = save_as_on_a_gpu({"module": weights}, zero / "mp_rank_00_model_states.pt")
    with pytest.raises(RuntimeError, match=NO_CUDA_HERE):
        torch.load(model_file, weights_only=False)  # as DeepSpeed's own loader reads it
    loaded = consolidate._deepspeed_model_weights(tmp_path / "state")
    assert loaded.keys() == weights.keys()
    for name, tensor in weights.items():
        assert loaded[name].device.type == "cpu" and torch.equal(loaded[name], tensor), name


def test_a_weights_file_saved_on_a_gpu_loads_on_the_cpu(dcp_checkpoint, tmp_path):
    """An exported or averaged file written where the weights were on a GPU."""
    folder, expected = dcp_checkpoint
    out = save_as_on_a_gpu(load_checkpoint(folder), tmp_path / "model.pt")
    with pytest.raises(RuntimeError, match=NO_CUDA_HERE):
        torch.load(out, weights_only=True)
    payload = load_checkpoint(out)
    assert_same_weights(payload["model"], expected)
    assert all(t.device.type == "cpu" for t in payload["model"].values())
