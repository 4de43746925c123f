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


class GpuGenerators:
    """torch.cuda's RNG calls on a machine with `count` GPUs, this process on GPU `device`.
    Each GPU's generator is a real torch.Generator (a CPU one: the same get_state/set_state
    contract), so the tests check which stream comes back by drawing from it, rather than
    by reading back what a fake returned."""

    def __init__(self, monkeypatch, count, device, initialized=True):
        self.generators = [torch.Generator().manual_seed(100 + index) for index in range(count)]
        self.device = device
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.device)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", self.get_rng_state_all)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_rng_state_all)

    def _generator(self, device):
        index = self.device if device == "cuda" else torch.device("cuda", device).index
        return self.generators[index]

    def get_rng_state(self, device="cuda"):
        return self._generator(device).get_state()

    def set_rng_state(self, new_state, device="cuda"):
        self._generator(device).set_state(new_state)

    def get_rng_state_all(self):
        return [generator.get_state() for generator in self.generators]

    def set_rng_state_all(self, new_states):
        for generator, state in zip(self.generators, new_states):
            generator.set_state(state)

    def draws(self, index):
        return torch.rand(4, generator=self.generators[index]).tolist()


def test_this_gpus_stream_continues_after_a_restore_and_no_other_is_rewound(monkeypatch):
    gpus = GpuGenerators(monkeypatch, count=2, device=1)
    state = RNGState(seed=1, rank=1).state_dict()
    expected = gpus.draws(1)
    other_before = gpus.draws(0)  # GPU 0 moves on after the capture
    gpus.draws(1)
    RNGState(seed=1, rank=1).load_state_dict(state)
    assert gpus.draws(1) == expected
    assert gpus.draws(0) != other_before  # GPU 0 went on, not back to the capture


def test_a_ranks_gpu_stream_resumes_where_it_sees_fewer_gpus(monkeypatch):
    """Saved by the rank on GPU 1 of 2; resumed with one visible GPU per rank (index 0):
    the rank's own stream must come back, whatever its GPU's index now."""
    saved_on = GpuGenerators(monkeypatch, count=2, device=1)
    state = rng.capture()
    expected = saved_on.draws(1)
    resumed_on = GpuGenerators(monkeypatch, count=1, device=0)
    rng.restore(state)
    assert resumed_on.draws(0) == expected


def test_an_older_all_gpu_state_restores_this_gpus_entry_or_nothing(monkeypatch):
    """Checkpoints once held every visible GPU's state in a list."""
    gpus = GpuGenerators(monkeypatch, count=2, device=1)
    state = rng.capture()
    state["cuda"] = torch.cuda.get_rng_state_all()  # as an older version saved it
    expected = [gpus.draws(0), gpus.draws(1)]
    rng.restore(state)
    assert gpus.draws(1) == expected[1]  # this process's GPU: back to the capture
    assert gpus.draws(0) != expected[0]  # the other GPU is not this process's to rewind
    state["cuda"] = state["cuda"][:1]  # fewer GPUs then than this rank's index
    going_on = torch.Generator().set_state(gpus.generators[1].get_state())
    rng.restore(state)
    assert gpus.draws(1) == torch.rand(4, generator=going_on).tolist()  # left as it was


def test_a_process_that_never_used_its_gpu_saves_no_gpu_state(monkeypatch):
    """Reading a GPU's generator would create a CUDA context for nothing."""
    GpuGenerators(monkeypatch, count=1, device=0, initialized=False)
    for read in ("get_rng_state", "get_rng_state_all"):
        monkeypatch.setattr(torch.cuda, read, lambda *args: pytest.fail(f"{read} called"))
    assert "cuda" not in rng.capture()
