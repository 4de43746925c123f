import gzip

import pytest

from dist_lstm.data.corpus import load_parallel, read_checksums, read_lines, sha256_of
from dist_lstm.errors import DataError
from tests.helpers.corpus import write_lines


def test_reads_plain_and_gzip(tmp_path):
    write_lines(tmp_path / "a.txt", ["eins", "zwei"])
    with gzip.open(tmp_path / "a.gz", "wt", encoding="utf-8") as f:
        f.write("eins\nzwei\n")
    assert read_lines(tmp_path / "a.txt") == read_lines(tmp_path / "a.gz") == ["eins", "zwei"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"not found: .*nope\.de.*data\.\*"):
        read_lines(tmp_path / "nope.de")


def test_line_count_mismatch_names_the_line_where_they_part(tmp_path):
    src = write_lines(tmp_path / "s", ["a", "b", "c"])
    tgt = write_lines(tmp_path / "t", ["a", "b"])
    with pytest.raises(DataError, match=rf"part at line 3, which {src} has and {tgt} does not"):
        load_parallel(str(src), str(tgt))


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.de"
    path.write_bytes(b"gut\nauch gut\nschlecht \xff\xfe\n")
    with pytest.raises(DataError, match=r"bad\.de line 3 is not valid UTF-8"):
        read_lines(path)


def test_empty_corpus(tmp_path):
    src = write_lines(tmp_path / "s", [])
    tgt = write_lines(tmp_path / "t", [])
    with pytest.raises(DataError, match="empty corpus"):
        load_parallel(str(src), str(tgt))


def test_checksum_mismatch_names_file_and_fix(tmp_path):
    src = write_lines(tmp_path / "s.de", ["a"])
    tgt = write_lines(tmp_path / "t.en", ["b"])
    (tmp_path / "SHA256SUMS").write_text(f"{sha256_of(src)}  s.de\n{'0' * 64}  t.en\n")
    sums = read_checksums(tmp_path / "SHA256SUMS")
    with pytest.raises(DataError, match=r"checksum mismatch for .*t\.en.*restore"):
        load_parallel(str(src), str(tgt), sums)


def test_embedded_multi30k_checksums_verify():
    from dist_lstm.config.resolvers import EMBEDDED_DATA_DIR

    root = EMBEDDED_DATA_DIR / "multi30k"
    sums = read_checksums(root / "SHA256SUMS")
    assert len(sums) == 12
    text = load_parallel(str(root / "val.de.gz"), str(root / "val.en.gz"), sums)
    assert len(text) == 1014


def test_streamed_pairs_come_in_chunks_and_stop_at_the_limit(tmp_path):
    from dist_lstm.data.corpus import stream_pairs

    src = write_lines(tmp_path / "s", [f"s{i}" for i in range(10)])
    tgt = write_lines(tmp_path / "t", [f"t{i}" for i in range(10)])
    chunks = list(stream_pairs(src, tgt, limit=7, chunk=3))
    assert [len(s) for s, _ in chunks] == [3, 3, 1]
    assert chunks[-1] == (["s6"], ["t6"])


# Chunks of 2: the files part inside a chunk, at a chunk's start, after the last full
# chunk of either side, and before the first line.
@pytest.mark.parametrize("src_lines, tgt_lines", [(5, 4), (3, 4), (4, 5), (5, 2), (0, 3)])
def test_streamed_files_of_different_length_name_the_line_where_they_part(
    tmp_path, src_lines, tgt_lines
):
    from dist_lstm.data.corpus import stream_pairs

    src = write_lines(tmp_path / "s", ["a"] * src_lines)
    tgt = write_lines(tmp_path / "t", ["b"] * tgt_lines)
    common = min(src_lines, tgt_lines)
    longer, shorter = (src, tgt) if src_lines > tgt_lines else (tgt, src)
    with pytest.raises(
        DataError,
        match=rf"part at line {common + 1}, which {longer} has and {shorter} does not "
        rf"\(it ends after {common} lines\).*line-aligned",
    ):
        list(stream_pairs(src, tgt, chunk=2))


def test_line_counts_for_the_progress_bar(tmp_path):
    from dist_lstm.data.corpus import count_lines

    (tmp_path / "a.txt").write_text("x\ny\nz")  # no newline after the last line
    with gzip.open(tmp_path / "b.gz", "wt") as f:
        f.write("x\n" * 5)
    assert count_lines(tmp_path / "a.txt") == 3 and count_lines(tmp_path / "b.gz") == 5
    assert count_lines(tmp_path / "b.gz", limit=2) == 2


def test_a_damaged_gzip_is_named_when_counting_its_lines(tmp_path):
    from dist_lstm.data.corpus import count_lines

    (tmp_path / "bad.gz").write_bytes(b"not gzip at all\n")
    with pytest.raises(DataError, match=r"cannot read \S*bad\.gz.*valid \(gzip\) text file"):
        count_lines(tmp_path / "bad.gz")
