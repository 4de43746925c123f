"""Prepared data: a corpus tokenized once into flat token files that every rank maps.

    <prepared dir>/                 data.prepared_dir, or cache_dir/prepared/<key>
        manifest.json               written last: inputs (size, mtime, sha256), options,
                                    tokenizer fingerprint, dtype, per-split counts
        tokenizer/                  the SentencePiece model(s) the ids belong to
        train.src.bin train.tgt.bin ids back to back (uint16 below 65,536 pieces, else int32)
        train.src.off.npy ...       int64 offsets into the .bin, one more than pairs
        train.sizes.npy             padded size of each pair (the batch planner's input)
        valid.*                     the same for validation, plus valid.ref.txt (the raw
                                    references BLEU is scored against)

Why: reading text into Python lists on every rank holds the corpus in every rank's memory
and re-encodes it at every start: on 1M pairs the previous in-memory path took 53.4 s to
its first step and peaked at 3.0 GB RSS in one rank (benchmarks/RESULTS.md, "Data at scale";
`benchmarks/data_scale.py --old-code` measures it again). Token files are written once by
one process per node, then read in place: the page cache shares them between ranks and a
restart only opens files.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import sentencepiece as spm

from dist_lstm.atomic import atomic_write
from dist_lstm.config.schema import DataConfig
from dist_lstm.data.corpus import count_lines, sha256_of, stream_pairs
from dist_lstm.data.shaping import INPUT_FILES, PREPARED_KEYS, option_values
from dist_lstm.data.tokenizer import Tokenizer, TokenizerOptions, train_or_load
from dist_lstm.errors import DataError

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
# The data.* keys the prepared files depend on besides the raw files (data/shaping.py).
OPTION_KEYS = tuple(key for key in PREPARED_KEYS if key not in INPUT_FILES)


def tokenizer_options(data: DataConfig) -> TokenizerOptions:
    tokenizer = data.tokenizer
    return TokenizerOptions(
        type=tokenizer.type,
        joint=tokenizer.joint,
        vocab_size=tokenizer.vocab_size,
        character_coverage=tokenizer.character_coverage,
        input_sentence_size=tokenizer.input_sentence_size,
    )


def _values(data: DataConfig, keys: Tuple[str, ...]) -> Dict[str, Any]:
    """data/shaping.py's {"data.KEY": value} of `keys` (it reads configs as mappings: a
    checkpoint's saved config is one)."""
    return option_values(asdict(data), keys)


def input_files(data: DataConfig) -> Dict[str, Path]:
    """Every raw file the prepared data is made of, by config key: the training corpus,
    the extra weighted ones (data.corpora) and validation."""
    return {key: Path(path).expanduser() for key, path in _values(data, INPUT_FILES).items()}


def training_corpora(data: DataConfig) -> List[Tuple[str, str]]:
    """(source, target) files of each training corpus, data.train_* first."""
    return [(data.train_src, data.train_tgt)] + [(c.src, c.tgt) for c in data.corpora]


def preparation_options(data: DataConfig) -> Dict[str, Any]:
    """Everything in the data config the prepared files depend on, by config key (the
    corpora's weights are not: they act when batches are planned)."""
    options = _values(data, OPTION_KEYS)
    options.update({key: str(path.resolve()) for key, path in input_files(data).items()})
    return options


def prepared_location(data: DataConfig) -> Path:
    """data.prepared_dir, or a folder of the cache named after the options' hash."""
    if data.prepared_dir:
        return Path(data.prepared_dir).expanduser()
    payload = {"format": FORMAT, "sentencepiece": spm.__version__, **preparation_options(data)}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    return Path(data.cache_dir).expanduser() / "prepared" / key


# ------------------------------------------------------------------------ checking
def read_manifest(directory: Path) -> Optional[Dict[str, Any]]:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is damaged ({exc}): delete {directory} to prepare again.")


def stale_reason(directory: Path, manifest: Dict[str, Any], data: DataConfig) -> Optional[str]:
    """Why `directory` does not hold the data `data` asks for (None: it does)."""
    if manifest.get("format") != FORMAT:
        return (
            f"it is in prepared-data format {manifest.get('format')}, this version writes {FORMAT}"
        )
    for key, value in preparation_options(data).items():
        if manifest["options"].get(key) != value:
            return (
                f"it was prepared with {key}={manifest['options'].get(key)}, this run asks "
                f"for {key}={value}"
            )
    for key, path in input_files(data).items():
        recorded = manifest["inputs"].get(key)
        if recorded is None:
            return f"it was not prepared from {key}"
        if not path.is_file():
            return f"{key}={path} does not exist"
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns) != (recorded["size"], recorded["mtime_ns"]):
            if stat.st_size != recorded["size"] or sha256_of(path) != recorded["sha256"]:
                return f"{key}={path} changed since it was prepared (checksum)"
    return None


def check_files(directory: Path, manifest: Dict[str, Any]) -> None:
    """Every file the manifest lists has the size it had when written (a truncated copy,
    a disk that filled up after the fact, a file replaced by hand)."""
    for name, size in manifest["files"].items():
        path = directory / name
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            raise DataError(
                f"prepared data {path} has {actual if actual is not None else 'no'} bytes, its "
                f"manifest says {size}: the copy is incomplete or was changed. Delete "
                f"{directory} and run again (or `dist-lstm prepare`) to prepare it anew."
            )


def ensure_prepared(
    data: DataConfig, prepares: bool, wait_s: Optional[float], force: bool = False
) -> Path:
    """The prepared folder for `data`, written here if missing or stale (or `force`) when
    `prepares` (one process per node), else waited for, at most `wait_s` seconds (which
    a process that waits must be given: strategy.timeout_s)."""
    target = prepared_location(data)
    if not prepares:
        if wait_s is None:
            raise ValueError("ensure_prepared: a process that waits for the data needs wait_s")
        return _wait_until_prepared(data, target, wait_s)
    with _preparation_lock(data, target):
        manifest = None if force else read_manifest(target)
        reason = None if manifest is None else stale_reason(target, manifest, data)
        if manifest is not None and reason is None:
            check_files(target, manifest)
            return target
        if reason is not None:
            if data.prepared_dir:
                raise DataError(
                    f"data.prepared_dir={target} no longer fits this run: {reason}. Prepare "
                    f"it again (`dist-lstm prepare ... --force`) or delete it."
                )
            log.warning("prepared data %s is stale (%s); preparing it again", target, reason)
        prepare(data, target)
        return target


def _wait_until_prepared(data: DataConfig, target: Path, wait_s: float) -> Path:
    deadline = time.monotonic() + wait_s
    while True:
        manifest = read_manifest(target)
        if manifest is not None and stale_reason(target, manifest, data) is None:
            check_files(target, manifest)
            return target
        if time.monotonic() > deadline:
            raise DataError(
                f"waited {wait_s:.0f} s for the prepared data in {target} that the node's "
                "first process writes; see its log for why it is not there (or raise "
                "strategy.timeout_s for a very large corpus)."
            )
        time.sleep(1.0)


@contextmanager
def _preparation_lock(data: DataConfig, target: Path) -> Iterator[None]:
    """One preparer of `target` at a time, on every node that shares its disk: the first
    node's process of each job prepares, so two jobs (or the nodes of one job) starting
    together would otherwise each replace the folder the others had begun to read. The
    lock (flock) ends with its process, so a killed preparer never blocks the next."""
    _make_folders(data, target)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that prepares %s", target)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file drops the lock


# ------------------------------------------------------------------------ writing
class _TokenFile:
    """Appends ids to `<name>.bin` and remembers each sequence's length."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, np.dtype(dtype)
        self.handle = open(path, "wb")
        self.lengths: List[np.ndarray] = []

    def append(self, sequences: List[List[int]]) -> np.ndarray:
        """Write `sequences`; returns their ids as one flat array."""
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        flat = np.fromiter(
            itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum())
        )
        if len(flat) and int(flat.max()) > np.iinfo(self.dtype).max:
            raise DataError(
                f"token id {int(flat.max())} does not fit {self.dtype.name} in {self.path}: "
                "the vocabulary is larger than the chosen token dtype allows."
            )
        self.handle.write(flat.astype(self.dtype).tobytes())
        self.lengths.append(lengths)
        return flat

    def close(self) -> np.ndarray:
        """Finish the file; returns the lengths of every sequence written."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)


def _token_dtype(tokenizer: Tokenizer) -> np.dtype:
    largest = max(tokenizer.src_vocab_size, tokenizer.model_size("tgt"))
    return np.dtype(np.uint16 if largest <= 2**16 else np.int32)


def _keep(src: List[List[int]], tgt: List[List[int]], data: DataConfig, train: bool):
    """Which pairs to keep, and how many were dropped for each reason."""
    src_len = np.fromiter(map(len, src), dtype=np.int64, count=len(src))
    tgt_len = np.fromiter(map(len, tgt), dtype=np.int64, count=len(tgt))
    empty = (src_len == 0) | (tgt_len == 0)
    too_long = np.zeros_like(empty)
    ratio = np.zeros_like(empty)
    if train and data.max_len is not None:
        too_long = ~empty & ((src_len > data.max_len) | (tgt_len > data.max_len))
    if train and data.max_len_ratio is not None:
        longer = np.maximum(src_len, tgt_len)
        ratio = ~empty & ~too_long & (longer > data.max_len_ratio * np.minimum(src_len, tgt_len))
    keep = ~(empty | too_long | ratio)
    return keep, {
        "empty": int(empty.sum()),
        "too_long": int(too_long.sum()),
        "ratio": int(ratio.sum()),
    }


def _write_split(
    data: DataConfig,
    split: str,
    tokenizer: Tokenizer,
    scratch: Path,
    dtype: np.dtype,
    target_lookup: Optional[np.ndarray],
    progress: "_Progress",
) -> Tuple[Dict[str, Any], Optional[np.ndarray]]:
    """Encode one split into scratch/; returns its counts and, for train, the target model
    pieces its kept targets use (the decoder's vocabulary)."""
    train = split == "train"
    limit = data.max_train_examples if train else data.max_valid_examples
    sources = training_corpora(data) if train else [(data.valid_src, data.valid_tgt)]
    threads = os.cpu_count() or 1
    files = {side: _TokenFile(scratch / f"{split}.{side}.bin", dtype) for side in ("src", "tgt")}
    used = np.zeros(tokenizer.model_size("tgt"), dtype=bool) if train else None
    dropped = {"empty": 0, "too_long": 0, "ratio": 0}
    references = open(scratch / f"{split}.ref.txt", "w", encoding="utf-8") if not train else None
    read, corpus_pairs = 0, [0] * len(sources)
    for src_text, tgt_text, corpus in _chunks_of(sources, limit):
        src = tokenizer.model_ids("src", src_text, threads)
        tgt = tokenizer.model_ids("tgt", tgt_text, threads)
        keep, counts = _keep(src, tgt, data, train)
        dropped = {k: dropped[k] + counts[k] for k in dropped}
        kept = np.flatnonzero(keep)
        corpus_pairs[corpus] += len(kept)
        tgt_kept = [tgt[i] for i in kept]
        if target_lookup is not None:
            tgt_kept = [target_lookup[seq].tolist() for seq in tgt_kept]
        files["src"].append([src[i] for i in kept])
        flat_targets = files["tgt"].append(tgt_kept)
        if used is not None:
            used[flat_targets] = True
        if references is not None:
            references.writelines(tgt_text[i] + "\n" for i in kept)
        read += len(src_text)
        progress.advance(split, len(src_text))
    if references is not None:
        references.close()
    lengths = {side: handle.close() for side, handle in files.items()}
    for side, side_lengths in lengths.items():
        offsets = np.zeros(len(side_lengths) + 1, dtype=np.int64)
        np.cumsum(side_lengths, out=offsets[1:])
        np.save(scratch / f"{split}.{side}.off.npy", offsets)
    sizes = np.maximum(lengths["src"], lengths["tgt"] + 1)
    size_dtype = np.uint16 if len(sizes) == 0 or sizes.max() < 2**16 else np.int32
    np.save(scratch / f"{split}.sizes.npy", sizes.astype(size_dtype))
    kept_pairs = len(sizes)
    log.info(
        "%s: %d pairs kept of %d; dropped %d empty, %d longer than data.max_len=%s, %d past "
        "data.max_len_ratio=%s",
        split,
        kept_pairs,
        read,
        dropped["empty"],
        dropped["too_long"],
        data.max_len,
        dropped["ratio"],
        data.max_len_ratio,
    )
    if kept_pairs == 0:
        raise DataError(
            f"{split} split is empty after filtering ({dropped}) in {sources[0][0]} / "
            f"{sources[0][1]}. Check the files, or raise data.max_len."
        )
    counts = {
        "pairs": kept_pairs,
        "corpus_pairs": corpus_pairs,  # kept pairs of each corpus, in file order
        "read": read,
        "dropped": dropped,
        "src_tokens": int(lengths["src"].sum()),
        "tgt_tokens": int(lengths["tgt"].sum()),
    }
    return counts, (np.flatnonzero(used) if used is not None else None)


def _chunks_of(sources: List[Tuple[str, str]], limit: Optional[int]):
    """(source lines, target lines, corpus number) chunks of every corpus in turn; `limit`
    pairs at most of each."""
    for corpus, (src_path, tgt_path) in enumerate(sources):
        for src_text, tgt_text in stream_pairs(src_path, tgt_path, limit):
            yield src_text, tgt_text, corpus


def _remap_targets(scratch: Path, lookup: np.ndarray, dtype: np.dtype, chunk: int = 1 << 24):
    """train.tgt.bin holds target model ids: map them to the pruned vocabulary in place."""
    path = scratch / "train.tgt.bin"
    ids = np.memmap(path, dtype=dtype, mode="r+")
    for start in range(0, len(ids), chunk):
        ids[start : start + chunk] = lookup[ids[start : start + chunk]]
    ids.flush()
    del ids


class _Progress:
    """Pairs read per split, with rate and ETA (when the line count is known)."""

    def __init__(self, totals: Dict[str, Optional[int]]):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class PairsPerSecond(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{task.speed or 0:,.0f} pairs/s")

        self.bar = Progress(
            TextColumn("prepare {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            PairsPerSecond(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.tasks = {
            split: self.bar.add_task(split, total=total) for split, total in totals.items()
        }

    def __enter__(self) -> "_Progress":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def advance(self, split: str, pairs: int) -> None:
        self.bar.advance(self.tasks[split], pairs)


def _file_identity(path: str) -> Dict[str, Any]:
    stat = Path(path).expanduser().stat()
    return {
        "path": str(Path(path).expanduser().resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256_of(Path(path).expanduser()),
    }


def prepare(data: DataConfig, target: Path) -> Dict[str, Any]:
    """Tokenize the train and valid splits of `data` into `target`, atomically: written
    in a scratch folder beside it and renamed into place; the manifest comes last."""
    started = time.monotonic()
    _check_inputs(data)
    target_key = _make_folders(data, target)
    manifest: Optional[Dict[str, Any]] = None
    try:
        with atomic_write(target) as scratch:  # a stale folder at `target` is replaced
            _make_folder(scratch, target, target_key)
            manifest = _prepare_into(data, scratch)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DataError(
                f"the disk filled up while preparing data into {target}: free space there, or "
                "point data.cache_dir (or data.prepared_dir) at a larger disk. Nothing "
                "incomplete was left behind."
            ) from None
        if manifest is None or not (target / MANIFEST).is_file():
            raise
        # the rename lost a race: another process put its complete folder there; it stays
    pairs = manifest["splits"]["train"]["read"]
    seconds = time.monotonic() - started
    log.info("prepared %s in %.1f s (%.0f training pairs/s)", target, seconds, pairs / seconds)
    return manifest


def _check_inputs(data: DataConfig) -> None:
    """Every raw file exists and has a line: stop before training a tokenizer on them."""
    for key, path in input_files(data).items():
        if not path.is_file():
            raise DataError(
                f"data file not found: {path} ({key}). Check the data.* paths in your "
                "config (or the command-line override that set them)."
            )
        if count_lines(path, limit=1) == 0:
            raise DataError(
                f"empty corpus: {path} ({key}) contains no lines. Point {key} at the "
                "corpus file (one sentence per line)."
            )


def _make_folders(data: DataConfig, target: Path) -> str:
    """The cache (the tokenizer is cached there) and `target`'s parent; returns the key
    that names where `target` is."""
    cache, cache_key = Path(data.cache_dir).expanduser(), "data.cache_dir (or $DIST_LSTM_CACHE)"
    _make_folder(cache, cache, cache_key)
    target_key = "data.prepared_dir" if data.prepared_dir else cache_key
    _make_folder(target.parent, target, target_key)
    return target_key


def _make_folder(folder: Path, shown: Path, key: str) -> None:
    """Create `folder` (and its parents) for `shown`, the folder the user chose; one that
    cannot be created (no such parent, a file in the way, no permission) names `key`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        existing = next(path for path in (folder, *folder.parents) if path.exists())
        reason = (
            f"{existing} is a file"
            if not existing.is_dir()
            else f"{exc.strerror or exc}: {exc.filename or folder}"
        )
        raise DataError(
            f"cannot create {shown} ({reason}). Set {key} to a folder you can write to."
        ) from None


def _prepare_into(data: DataConfig, scratch: Path) -> Dict[str, Any]:
    options = tokenizer_options(data)
    limit = data.max_train_examples
    corpora = training_corpora(data)
    tokenizer = train_or_load(
        [src for src, _ in corpora], [tgt for _, tgt in corpora], limit, options, data.cache_dir
    )
    dtype = _token_dtype(tokenizer)
    totals = {
        "train": sum(count_lines(src, data.max_train_examples) for src, _ in corpora),
        "valid": count_lines(data.valid_src, data.max_valid_examples),
    }
    with _Progress(totals) as progress:
        train, used = _write_split(data, "train", tokenizer, scratch, dtype, None, progress)
        if data.tokenizer.prune_target_vocab:
            tokenizer = tokenizer.with_target_pieces(used.tolist())
            _remap_targets(scratch, tokenizer.target_lookup(), dtype)
        valid, _ = _write_split(
            data, "valid", tokenizer, scratch, dtype, tokenizer.target_lookup(), progress
        )
    tokenizer.save(scratch / "tokenizer")
    files = {p.name: p.stat().st_size for p in sorted(scratch.iterdir()) if p.is_file()}
    manifest = {
        "format": FORMAT,
        "options": preparation_options(data),
        "tokenizer_options": asdict(options),
        "tokenizer": tokenizer.fingerprint,
        "dtype": dtype.name,
        "inputs": {key: _file_identity(path) for key, path in input_files(data).items()},
        "splits": {"train": train, "valid": valid},
        "files": files,
    }
    path = scratch / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    return manifest
