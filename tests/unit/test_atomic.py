"""atomic_write: the target is the old one or the whole new one, and no scratch stays."""

import pytest

from dist_lstm.atomic import atomic_write


def test_a_file_is_replaced_whole_and_no_scratch_stays(tmp_path):
    target = tmp_path / "sub" / "result.json"
    for text in ("first", "second"):
        with atomic_write(target) as scratch:
            scratch.write_text(text)
            assert target.parent == scratch.parent and scratch != target
            assert not target.exists() or target.read_text() != text  # not there before the end
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_a_failed_write_leaves_the_old_file_and_no_scratch(tmp_path):
    target = tmp_path / "summary.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk"):
        with atomic_write(target) as scratch:
            scratch.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_a_folder_replaces_a_folder_in_the_way(tmp_path):
    target = tmp_path / "prepared"
    (target / "stale").mkdir(parents=True)
    (target / "stale" / "train.bin").write_text("stale")
    with atomic_write(target) as scratch:
        scratch.mkdir()
        (scratch / "manifest.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]
