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
