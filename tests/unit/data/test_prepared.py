"""Prepared data: token files written once, atomically, then memory-mapped; every way
they can be wrong or out of date is named with its fix."""

import errno
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from dist_lstm.batch import BOS_ID, EOS_ID
from dist_lstm.config.compose import compose_config
from dist_lstm.config.schema import DataConfig
from dist_lstm.data import prepared
from dist_lstm.data.build import build_data, collate
from dist_lstm.data.mapped import MappedSplit
from dist_lstm.data.prepared import ensure_prepared, prepared_location
from dist_lstm.errors import DataError
from tests.helpers.corpus import write_lines

SRC = ["ein kleiner hund läuft", "zwei männer spielen fußball", "eine frau liest ein buch"]
TGT = ["a small dog runs", "two men play soccer", "a woman reads a book"]


def corpus(tmp_path, train_src, train_tgt, *overrides) -> DataConfig:
    """The data group of a custom corpus with `overrides` (validation: the first training
    lines), as run.train hands it to preparation: the schema's dataclass."""
    composed = compose_config(
        [
            "data=custom",
            f"data.train_src={write_lines(tmp_path / 'train.de', train_src)}",
            f"data.train_tgt={write_lines(tmp_path / 'train.en', train_tgt)}",
            f"data.valid_src={write_lines(tmp_path / 'valid.de', train_src[:4])}",
            f"data.valid_tgt={write_lines(tmp_path / 'valid.en', train_tgt[:4])}",
            "data.tokenizer.vocab_size=60",
            f"data.cache_dir={tmp_path / 'cache'}",
            *overrides,
        ]
    )
    return OmegaConf.to_object(composed.data)


@pytest.fixture
def data(tmp_path):
    return corpus(tmp_path, SRC * 40, TGT * 40)


def test_prepared_pairs_are_the_tokenized_lines_and_pickle_as_a_path(data):
    loaded = build_data(data)
    pairs = loaded.train
    assert len(pairs) == 120
    index, src, tgt = pairs[4]
    assert index == 4
    assert src.tolist() == loaded.tokenizer.encode("src", [SRC[1]])[0]
    assert tgt.tolist() == loaded.tokenizer.encode("tgt", [TGT[1]])[0]
    assert pairs.dtype == np.uint16  # a 60-piece vocabulary: 2 bytes a token
    assert pairs.sizes()[4] == max(len(src), len(tgt) + 1)
    assert len(pickle.dumps(pairs)) < 500  # a DataLoader worker gets the folder, not data
    assert pickle.loads(pickle.dumps(pairs))[4][1].tolist() == src.tolist()
    assert loaded.valid.references == TGT + [TGT[0]]  # raw text, for BLEU
    batch = collate([pairs[0], pairs[1]])
    assert batch.tgt_in[:, 0].tolist() == [BOS_ID, BOS_ID]
    assert (batch.tgt_out == EOS_ID).sum() == 2


def test_filters_drop_empty_long_and_unbalanced_pairs_and_count_them(tmp_path, caplog):
    src = SRC * 20 + ["", "sehr " * 80, "ok", "ja " * 8]
    tgt = TGT * 20 + ["leer", "very " * 3, "", "a"]
    data = corpus(tmp_path, src, tgt, "data.max_len=30", "data.max_len_ratio=4")
    with caplog.at_level(logging.INFO):
        directory = ensure_prepared(data, prepares=True, wait_s=0)
    counts = json.loads((directory / "manifest.json").read_text())["splits"]["train"]
    assert counts["pairs"] == 60 and counts["read"] == 64
    assert counts["dropped"] == {"empty": 2, "too_long": 1, "ratio": 1}
    assert "dropped 2 empty, 1 longer than data.max_len=30, 1 past" in caplog.text


def test_a_second_start_maps_the_files_without_preparing(data, monkeypatch):
    first = ensure_prepared(data, prepares=True, wait_s=0)
    monkeypatch.setattr(prepared, "prepare", lambda *a: pytest.fail("prepared again"))
    assert ensure_prepared(data, prepares=True, wait_s=0) == first


def test_an_interrupted_prepare_leaves_nothing_that_looks_complete(data, monkeypatch):
    def fail_on_valid(*args, **kwargs):
        if args[1] == "valid":
            raise KeyboardInterrupt  # killed midway
        return write_split(*args, **kwargs)

    write_split = prepared._write_split
    monkeypatch.setattr(prepared, "_write_split", fail_on_valid)
    with pytest.raises(KeyboardInterrupt):
        ensure_prepared(data, prepares=True, wait_s=0)
    target = prepared_location(data)
    assert not target.exists()
    left = [p for p in target.parent.iterdir() if p.suffix != ".lock"]  # the lock may stay
    assert left == []  # nor the scratch folder it was written in


def test_a_full_disk_is_named_and_nothing_is_left_behind(data, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepared, "_remap_targets", no_space)
    with pytest.raises(DataError, match="disk filled up.*data.cache_dir"):
        ensure_prepared(data, prepares=True, wait_s=0)
    left = prepared_location(data).parent.iterdir()
    assert [p for p in left if p.suffix != ".lock"] == []  # the empty lock file may stay


def test_a_truncated_token_file_is_named(data):
    directory = ensure_prepared(data, prepares=True, wait_s=0)
    tokens = directory / "train.tgt.bin"
    tokens.write_bytes(tokens.read_bytes()[:10])
    with pytest.raises(DataError, match=r"train\.tgt\.bin has 10 bytes.*incomplete.*Delete"):
        ensure_prepared(data, prepares=True, wait_s=0)


def test_a_changed_raw_file_prepares_again_in_the_cache(data, caplog):
    first = ensure_prepared(data, prepares=True, wait_s=0)
    write_lines(Path(data.train_tgt), [t.upper() for t in TGT * 40])
    with caplog.at_level(logging.WARNING):
        again = ensure_prepared(data, prepares=True, wait_s=0)
    assert again == first and "changed since it was prepared (checksum)" in caplog.text
    assert MappedSplit(again, "train", "uint16")[0][2].size > 0


def test_an_explicit_folder_that_no_longer_fits_names_the_key_or_file(tmp_path):
    data = corpus(tmp_path, SRC * 40, TGT * 40, f"data.prepared_dir={tmp_path / 'prep'}")
    ensure_prepared(data, prepares=True, wait_s=0)
    data.tokenizer.vocab_size = 50
    with pytest.raises(DataError, match=r"data.tokenizer.vocab_size=60, this run asks for "):
        ensure_prepared(data, prepares=True, wait_s=0)
    data.tokenizer.vocab_size = 60
    write_lines(Path(data.valid_src), ["anders"] * 4)
    with pytest.raises(DataError, match=r"data.valid_src=.*changed since it was prepared"):
        ensure_prepared(data, prepares=True, wait_s=0)


def test_a_process_that_waits_names_what_it_waited_for(data):
    with pytest.raises(DataError, match=r"waited 0 s for the prepared data in .*first process"):
        ensure_prepared(data, prepares=False, wait_s=0)


def test_ids_too_large_for_the_token_type_are_refused(tmp_path):
    token_file = prepared._TokenFile(tmp_path / "x.bin", np.uint16)
    with pytest.raises(DataError, match="70000 does not fit uint16"):
        token_file.append([[1, 70000]])


def test_weighted_corpora_are_prepared_together_and_planned_by_weight(tmp_path):
    from dist_lstm.data.build import make_train_loader

    extra = tmp_path / "extra"
    extra.mkdir()
    src = write_lines(extra / "de", ["ein buch"] * 8)
    tgt = write_lines(extra / "en", ["a book"] * 8)
    data = corpus(
        tmp_path, SRC * 4, TGT * 4, f"data.corpora=[{{src:'{src}',tgt:'{tgt}',weight:2}}]"
    )
    loaded = build_data(data)
    assert loaded.train_shares == [(0, 12, 1.0), (12, 20, 2.0)]
    assert loaded.train[12][1].tolist() == loaded.tokenizer.encode("src", ["ein buch"])[0]
    loader = make_train_loader(loaded.train, 64, 1, shares=loaded.train_shares)
    indices = [i for batch in loader for i in batch.indices.tolist()]
    assert sorted(indices) == list(range(12)) + sorted(list(range(12, 20)) * 2)
    before = prepared_location(data)
    data.corpora[0].weight = 0.5  # weights act at planning: the same prepared files
    assert prepared_location(data) == before


# Bad corpora on the streamed path training takes (build_data, as run.train calls it):
# each stops naming the file, and nothing that looks prepared is left behind.
def fails_to_prepare(data, message: str) -> None:
    with pytest.raises(DataError, match=message):
        build_data(data)
    assert not prepared_location(data).exists()


@pytest.mark.parametrize(
    "key, name, line",
    [
        ("train_tgt", "train.en", 7),  # read by SentencePiece while it trains
        ("valid_tgt", "valid.en", 3),  # read only when the split is tokenized
    ],
)
def test_invalid_utf8_names_file_and_line(tmp_path, key, name, line):
    data = corpus(tmp_path, SRC * 4, TGT * 4)
    good = Path(getattr(data, key)).read_bytes().splitlines(keepends=True)
    good[line - 1] = b"kaputt \xff\xfe\n"
    Path(getattr(data, key)).write_bytes(b"".join(good))
    fails_to_prepare(data, rf"{name} line {line} is not valid UTF-8.*iconv")


@pytest.mark.parametrize("split", ["train", "valid"])
def test_an_empty_corpus_is_named_with_its_key(tmp_path, split):
    data = corpus(tmp_path, SRC * 4, TGT * 4)
    for side in ("src", "tgt"):
        write_lines(Path(getattr(data, f"{split}_{side}")), [])
    key = f"{split}_src"  # the first of the two empty files
    fails_to_prepare(data, rf"empty corpus: {getattr(data, key)} \(data\.{key}\) contains no lines")


@pytest.mark.parametrize(
    "shorter, lines, longer",
    [("train_tgt", 9, "train_src"), ("train_src", 11, "train_tgt"), ("valid_tgt", 2, "valid_src")],
)
def test_files_of_different_length_name_the_line_where_they_part(tmp_path, shorter, lines, longer):
    data = corpus(tmp_path, SRC * 4, TGT * 4)  # 12 training pairs, 4 validation pairs
    path = Path(getattr(data, shorter))
    write_lines(path, path.read_text().splitlines()[:lines])
    fails_to_prepare(
        data,
        rf"part at line {lines + 1}, which {getattr(data, longer)} has and {path} does not "
        rf"\(it ends after {lines} lines\)",
    )


def test_a_cache_folder_that_cannot_be_created_is_named_with_its_key(data, tmp_path):
    blocker = write_lines(tmp_path / "a-file", [])
    data.cache_dir = str(blocker / "cache")  # under a file: not even root can create it
    with pytest.raises(
        DataError,
        match=rf"cannot create {blocker}/cache \({blocker} is a file\)\. Set data\.cache_dir",
    ):
        build_data(data)


PREPARING_PROCESS = """
import logging, sys
from omegaconf import OmegaConf
from dist_lstm.config.schema import DataConfig
from dist_lstm.data.build import build_data
logging.basicConfig(level=logging.INFO)
typed = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(sys.argv[1]))
data = build_data(OmegaConf.to_object(typed))
print(data.tokenizer.fingerprint, len(data.train), data.train[len(data.train) - 1][1].tolist())
"""


def test_processes_starting_together_prepare_once_and_all_read_that_folder(data, tmp_path):
    """The first process of each node and of each job prepares: started together, one
    prepares and the others wait for it, so no process replaces a folder another has
    begun to read."""
    import subprocess
    import sys

    config = tmp_path / "data.yaml"
    config.write_text(OmegaConf.to_yaml(data))
    command = [sys.executable, "-c", PREPARING_PROCESS, str(config)]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    for process, (_, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr[-3000:]
    logs = "".join(stderr for _, stderr in results)
    assert logs.count("prepared " + str(prepared_location(data))) == 1, logs[-3000:]
    read = {stdout.strip().splitlines()[-1] for stdout, _ in results}
    assert len(read) == 1  # one folder, read alike by all
