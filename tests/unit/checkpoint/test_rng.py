"""The RNG checkpoint part: python, numpy and torch streams continue exactly after a
restore, the state survives a weights_only load, and fresh ranks get reproducible streams."""

import random

import numpy as np
import pytest
import torch

from dist_lstm.checkpoint import rng
from dist_lstm.checkpoint.rng import RNGState


@pytest.fixture(autouse=True)
def _keep_global_generators():
    """These tests reseed the process's generators; other tests get them back untouched
    (saved with the libraries' own calls, not the code under test)."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(saved[0])
    np.random.set_state(saved[1])
    torch.set_rng_state(saved[2])


def draws():
    """The next values of every stream; the gaussians also exercise the cached second
    value that python's gauss and numpy's legacy normal keep between calls."""
    return (
        [random.random(), random.gauss(0, 1), random.randint(0, 10**9)],
        np.random.rand(3).tolist() + [float(np.random.randn())],
        torch.rand(4).tolist() + torch.randn(3).tolist(),
    )


def scramble():
    """Draws and reseeds between capture and restore, as training would."""
    draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    draws()


def seed_with_cached_gaussians(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.gauss(0, 1)  # leaves a cached value in python's state
    np.random.randn()  # and in numpy's (has_gauss=1)


def test_restore_after_other_draws_brings_every_stream_back():
    seed_with_cached_gaussians(1)
    part = RNGState(seed=1, rank=0)
    state = part.state_dict()
    expected = draws()
    scramble()
    part.load_state_dict(state)
    assert draws() == expected


def test_the_state_survives_torch_save_and_a_weights_only_load(tmp_path):
    """Checkpoint files are read with weights_only=True: numpy's state must be plain."""
    seed_with_cached_gaussians(2)
    torch.save(rng.capture(), tmp_path / "rank_00000.pt")
    expected = draws()
    scramble()
    rng.restore(torch.load(tmp_path / "rank_00000.pt", weights_only=True))
    assert draws() == expected


def test_start_fresh_is_reproducible_for_seed_step_and_rank():
    def fresh(seed, step, rank):
        scramble()
        RNGState(seed=seed, rank=rank).start_fresh(step)
        return draws()

    reference = fresh(seed=3, step=40, rank=1)
    assert fresh(seed=3, step=40, rank=1) == reference
    for other in [dict(seed=3, step=40, rank=2), dict(seed=3, step=41, rank=1)]:
        streams = fresh(**other)
        # each stream on its own differs: no rank replays another rank's dropout masks
        assert all(mine != theirs for mine, theirs in zip(streams, reference)), other


class FakeCuda:
    """torch.cuda's RNG calls on a machine with GPUs, recorded."""

    def __init__(self, monkeypatch, device=0):
        self.set = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: device)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.tensor([7, device]))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state: self.set.append(state))

        def every_device(*args):
            raise AssertionError("only this process's GPU is saved and restored")

        monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_device)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", every_device)


def test_only_this_processs_gpu_generator_is_saved_and_restored(monkeypatch):
    cuda = FakeCuda(monkeypatch, device=0)
    state = rng.capture()
    assert torch.equal(state["cuda"], torch.tensor([7, 0]))
    rng.restore(state)
    assert len(cuda.set) == 1 and torch.equal(cuda.set[0], torch.tensor([7, 0]))


def test_an_older_all_gpu_state_restores_this_gpus_entry_or_nothing(monkeypatch):
    cuda = FakeCuda(monkeypatch, device=1)
    state = rng.capture()
    state["cuda"] = [torch.tensor([1]), torch.tensor([2])]  # saved with two visible GPUs
    rng.restore(state)
    assert torch.equal(cuda.set[-1], torch.tensor([2]))
    state["cuda"] = [torch.tensor([1])]  # fewer GPUs then than this rank's index
    rng.restore(state)
    assert len(cuda.set) == 1
