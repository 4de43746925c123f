"""The checkpoint manager on its own: registered parts saved and restored by name, with
fakes for the strategy and the parts (no model, no training)."""

from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import torch

from dist_lstm.checkpoint.average import last_step_checkpoints
from dist_lstm.checkpoint.manager import CheckpointManager, completed_checkpoints, read_meta
from dist_lstm.checkpoint.resume import resume_folder
from dist_lstm.errors import UserError


class Counter:
    def __init__(self, value: int = 0):
        self.value = value

    def state_dict(self) -> Dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.value = state["value"]


class PerRank(Counter):
    fresh_at: Optional[int] = None

    def start_fresh(self, step: int) -> None:
        self.fresh_at, self.value = step, -1


class FakeModelState:
    """Writes and reads one tensor, as a strategy writes model and optimizer."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight

    def save_state(self, folder: Path, asynchronous: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.weight, folder / "weight.pt")

    def load_state(self, folder: Path) -> None:
        self.weight.copy_(torch.load(folder / "weight.pt", weights_only=True))


def manager_with_parts(run_dir: Path, rank: int = 0, weight: float = 0.0):
    manager = CheckpointManager(run_dir, keep_last=2, rank=rank)
    parts = {"trainer": Counter(), "sampler": Counter(), "rng": PerRank()}
    model = FakeModelState(torch.full((3,), weight))
    manager.register_model_state(model)
    manager.register("trainer", parts["trainer"])
    manager.register("sampler", parts["sampler"])
    manager.register_per_rank("rng", parts["rng"])
    manager.run_metadata = {"config": {"seed": 1}}
    return manager, parts, model


def test_a_checkpoint_is_resumed_without_training(tmp_path):
    manager, parts, model = manager_with_parts(tmp_path, weight=2.5)
    parts["trainer"].value, parts["sampler"].value, parts["rng"].value = 7, 11, 13
    folder = manager.save(7, metrics={"val_bleu": 1.0}, best=True)
    assert read_meta(folder)["config"] == {"seed": 1}
    assert read_meta(folder)["metrics"] == {"val_bleu": 1.0}

    restored, fresh, fresh_model = manager_with_parts(tmp_path)
    assert restored.load(restored.latest()) == 7
    assert [fresh[n].value for n in ("trainer", "sampler", "rng")] == [7, 11, 13]
    assert torch.equal(fresh_model.weight, torch.full((3,), 2.5))
    assert fresh["rng"].fresh_at is None


def test_a_rank_the_checkpoint_has_no_file_for_starts_its_parts_fresh(tmp_path):
    manager, parts, _ = manager_with_parts(tmp_path)
    parts["rng"].value = 13
    manager.save(4)
    other_rank, fresh, _ = manager_with_parts(tmp_path, rank=1)  # written by one rank
    other_rank.load(other_rank.latest())
    assert fresh["rng"].fresh_at == 4 and fresh["rng"].value == -1


def test_a_part_registered_twice_is_refused(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.register("trainer", Counter())
    with pytest.raises(ValueError, match="'trainer' is registered twice"):
        manager.register_per_rank("trainer", PerRank())


def test_a_checkpoint_of_another_format_version_is_named(tmp_path):
    manager, _, _ = manager_with_parts(tmp_path)
    folder = manager.save(2)
    meta = torch.load(folder / "meta.pt", weights_only=True)
    torch.save({**meta, "format_version": 2}, folder / "meta.pt")
    with pytest.raises(UserError, match="checkpoint format 2"):
        manager.load(folder)


def test_a_damaged_part_file_fails_with_the_folder_and_the_fix(tmp_path):
    manager, _, _ = manager_with_parts(tmp_path)
    folder = manager.save(2)
    (folder / "trainer.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=f"{folder}.*resume=PATH"):
        manager.load(folder)


def test_listing_a_run_directory_finds_complete_checkpoints_and_removes_nothing(tmp_path):
    """resume=RUN_DIR and `average --run` list another run's checkpoints while it may
    still be saving one: only complete folders count, and the unfinished one stays."""
    folders = tmp_path / "checkpoints"
    for step, complete in ((3, True), (12, False), (7, True)):
        (folders / f"step_{step:08d}").mkdir(parents=True)
        if complete:
            (folders / f"step_{step:08d}" / "COMPLETE").write_text(f"{step}\n")
    (folders / ".incomplete_step_00000015").mkdir()  # a save being written
    done = [folders / "step_00000003", folders / "step_00000007"]
    assert completed_checkpoints(tmp_path) == done
    this_run = CheckpointManager(tmp_path / "this", keep_last=1)
    assert resume_folder(str(tmp_path), this_run) == done[1]
    assert last_step_checkpoints(tmp_path, 2) == done
    with pytest.raises(UserError, match="has 2 checkpoints, 3 were asked for"):
        last_step_checkpoints(tmp_path, 3)
    assert len(list(folders.iterdir())) == 4
    assert completed_checkpoints(tmp_path / "no such run") == []
