"""Checkpoint averaging on hand-built payload files: the element-wise mean, which
checkpoints a run offers, and refusals for checkpoints that cannot be averaged."""

import pytest
import torch

from dist_lstm.checkpoint.average import average_checkpoints, last_step_checkpoints
from dist_lstm.checkpoint.manager import ADDED_MODEL_KEYS
from dist_lstm.errors import UserError

MODEL = {"emb_dim": 8, "hidden_size": 8}
TOKENIZER = {"src": b"src-model", "tgt": b"tgt-model"}


def payload(step, weights, model=MODEL, tokenizer=TOKENIZER):
    return {
        "model": weights,
        "config": {"model": dict(model), "seed": 1},
        "tokenizer": dict(tokenizer),
        "step": step,
        "metrics": {"val_bleu": float(step)},
        "world_size": 2,
    }


def write(tmp_path, name, content):
    path = tmp_path / name
    torch.save(content, path)
    return path


def test_the_average_is_the_elementwise_mean_in_each_tensors_dtype(tmp_path):
    """Floats of every dtype are averaged and keep their dtype; the step counter (not a
    float) is copied from the first checkpoint, not averaged."""
    torch.manual_seed(0)
    weights = [
        {
            "w": torch.randn(3, 4),
            "b": torch.randn(5, dtype=torch.bfloat16),
            "d": torch.randn(2, dtype=torch.float64),
            "count": torch.tensor([10 * (i + 1)], dtype=torch.int64),
        }
        for i in range(2)
    ]
    paths = [write(tmp_path, f"c{i}.pt", payload(i + 1, w)) for i, w in enumerate(weights)]
    averaged = average_checkpoints(paths)["model"]
    for name in ("w", "b", "d"):
        expected = ((weights[0][name].double() + weights[1][name].double()) / 2).to(
            weights[0][name].dtype
        )
        assert averaged[name].dtype == weights[0][name].dtype, name
        assert torch.equal(averaged[name], expected), name
    assert averaged["count"].dtype == torch.int64
    assert torch.equal(averaged["count"], weights[0]["count"])


def test_the_mean_is_accumulated_in_float64(tmp_path):
    """2**24 + 1 + 1 in float32 loses both ones; the float64 sum keeps them."""
    values = [2.0**24, 1.0, 1.0]
    paths = [
        write(tmp_path, f"c{i}.pt", payload(i, {"w": torch.tensor([v])}))
        for i, v in enumerate(values)
    ]
    naive = (torch.tensor([values[0]]) + values[1] + values[2]) / 3  # float32 all along
    averaged = average_checkpoints(paths)["model"]["w"]
    assert averaged.dtype == torch.float32
    assert averaged.item() == (2**24 + 2) / 3 and averaged.item() != naive.item()


def test_the_result_is_the_last_checkpoint_without_run_specific_fields(tmp_path):
    paths = [write(tmp_path, f"c{i}.pt", payload(i, {"w": torch.zeros(1)})) for i in (3, 7)]
    result = average_checkpoints(paths)
    assert result["step"] == 7 and result["config"]["model"] == {**ADDED_MODEL_KEYS, **MODEL}
    assert result["tokenizer"] == TOKENIZER
    assert "metrics" not in result and "world_size" not in result  # they describe one run
    assert result["averaged_from"] == [str(p) for p in paths]


def make_step_folders(run_dir, steps, incomplete=()):
    for step in (*steps, *incomplete):
        folder = run_dir / "checkpoints" / f"step_{step:08d}"
        folder.mkdir(parents=True)
        if step not in incomplete:
            (folder / "COMPLETE").write_text(f"{step}\n")


def test_last_step_checkpoints_are_the_newest_complete_ones_oldest_first(tmp_path):
    """Step 11's save was interrupted: it is skipped, not counted."""
    make_step_folders(tmp_path, [2, 9, 10], incomplete=[11])
    found = last_step_checkpoints(tmp_path, 2)
    assert [p.name for p in found] == ["step_00000009", "step_00000010"]
    assert (tmp_path / "checkpoints" / "step_00000011").is_dir()  # a reader deletes nothing


def test_asking_for_more_checkpoints_than_kept_names_the_fix(tmp_path):
    make_step_folders(tmp_path, [2, 4])
    with pytest.raises(UserError, match="has 2 checkpoints, 3 were asked for.*--last.*keep_last"):
        last_step_checkpoints(tmp_path, 3)


@pytest.mark.parametrize(
    "other,message",
    [
        (payload(2, {"w": torch.zeros(2)}, model={**MODEL, "hidden_size": 16}), "model config"),
        (payload(2, {"w": torch.zeros(2)}, tokenizer={"src": b"x", "tgt": b"y"}), "tokenizer"),
        (payload(2, {"w": torch.zeros(3)}), "different shapes"),
        (payload(2, {"w": torch.zeros(2), "extra": torch.zeros(1)}), "different shapes"),
    ],
    ids=["model-config", "tokenizer", "shape", "keys"],
)
def test_checkpoints_that_cannot_be_averaged_are_refused(tmp_path, other, message):
    first = write(tmp_path, "first.pt", payload(1, {"w": torch.zeros(2)}))
    second = write(tmp_path, "second.pt", other)
    with pytest.raises(UserError, match=f"second.pt .*{message}"):
        average_checkpoints([first, second])


def test_averaging_nothing_is_refused():
    with pytest.raises(UserError, match="at least one checkpoint"):
        average_checkpoints([])
