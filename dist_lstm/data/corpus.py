"""Parallel text files: reading (plain or gzip), checksums and the errors users can fix.

Everything here works on raw strings; tokenization happens later. Each error names the file
(and line) at fault and what to do about it, because a corrupt download or a misaligned
corpus is the most common way a training run goes wrong before it starts.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from dist_lstm.errors import DataError


@dataclass
class ParallelText:
    """Aligned source/target sentences of one split, as raw text."""

    src: List[str]
    tgt: List[str]
    src_path: str
    tgt_path: str

    def __len__(self) -> int:
        return len(self.src)


def read_lines(path: str | Path) -> List[str]:
    """All lines of a UTF-8 text file (gzip if it ends in .gz), without line endings."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"data file not found: {path}. Check the data.* paths in your config "
            "(or the command-line override that set them)."
        )
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}. Is it a valid (gzip) text file?") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    decoded = []
    for number, line in enumerate(lines, start=1):
        try:
            decoded.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path} line {number} is not valid UTF-8 ({exc.reason} at byte {exc.start}). "
                "Re-encode the file as UTF-8, e.g. with `iconv -t UTF-8`."
            ) from None
    return decoded


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(
            f"data file not found: {path}. Check the data.* paths in your config "
            "(or the command-line override that set them)."
        )


def _decode(line: bytes, path: Path, number: int) -> str:
    try:
        return line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} line {number} is not valid UTF-8 ({exc.reason} at byte {exc.start}). "
            "Re-encode the file as UTF-8, e.g. with `iconv -t UTF-8`."
        ) from None


def stream_lines(path: str | Path, chunk: int = 100_000) -> Iterator[List[str]]:
    """The lines of a UTF-8 text file (gzip if it ends in .gz) in lists of `chunk`, so a
    corpus of any size is read in constant memory."""
    path = Path(path).expanduser()
    _check_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    number, lines = 0, []
    try:
        with opener(path, "rb") as handle:
            for raw in handle:
                number += 1
                lines.append(_decode(raw, path, number))
                if len(lines) == chunk:
                    yield lines
                    lines = []
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}. Is it a valid (gzip) text file?") from None
    if lines:
        yield lines


def count_lines(path: str | Path, limit: Optional[int] = None) -> int:
    """Lines in a (gzip) text file, at most `limit`: a few seconds for millions of lines,
    so a long preparation can show its ETA."""
    path = Path(path).expanduser()
    _check_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    count, last = 0, b"\n"
    try:
        with opener(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                count += block.count(b"\n")
                last = block[-1:]
                if limit is not None and count >= limit:
                    return limit
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}. Is it a valid (gzip) text file?") from None
    count += last != b"\n"  # a last line without its newline
    return count if limit is None else min(count, limit)


def stream_pairs(
    src_path: str | Path, tgt_path: str | Path, limit: Optional[int] = None, chunk: int = 100_000
) -> Iterator[Tuple[List[str], List[str]]]:
    """Aligned chunks of source and target lines (the first `limit` pairs when given);
    files of different length stop with both names and the line where they part."""
    seen = 0
    sources, targets = stream_lines(src_path, chunk), stream_lines(tgt_path, chunk)
    for src in sources:
        tgt = next(targets, [])
        if len(tgt) != len(src):
            # Chunks are full until a file ends, so the shorter chunk's file ends here.
            shorter, longer = (tgt_path, src_path) if len(tgt) < len(src) else (src_path, tgt_path)
            raise _parted(longer, shorter, seen + min(len(src), len(tgt)))
        if limit is not None and seen + len(src) >= limit:
            yield src[: limit - seen], tgt[: limit - seen]
            return
        seen += len(src)
        yield src, tgt
    if next(targets, None) is not None:
        raise _parted(tgt_path, src_path, seen)


def _parted(longer: str | Path, shorter: str | Path, common: int) -> DataError:
    """Parallel files of different length: the first line one has and the other lacks."""
    return DataError(
        f"source and target differ in length: they part at line {common + 1}, which {longer} "
        f"has and {shorter} does not (it ends after {common} lines). Parallel files must be "
        "line-aligned; fix or regenerate the shorter one."
    )


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(sums_path: str | Path) -> Dict[str, str]:
    """File name -> expected SHA256, from a `sha256sum`-style SHA256SUMS file."""
    sums_path = Path(sums_path).expanduser()
    if not sums_path.is_file():
        raise DataError(
            f"checksum file not found: {sums_path}. Set data.checksums to an existing "
            "SHA256SUMS file, or to null to skip verification."
        )
    expected = {}
    for line in sums_path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[name.lstrip("*").strip()] = digest
    return expected


def verify_checksum(path: str | Path, expected: Dict[str, str]) -> None:
    """Raise DataError if `path` is listed in `expected` with another digest."""
    path = Path(path).expanduser()
    want = expected.get(path.name)
    if want is None or not path.is_file():
        return
    got = sha256_of(path)
    if got != want:
        raise DataError(
            f"checksum mismatch for {path}: expected {want}, got {got}. The file is "
            "corrupt or was modified; restore it (e.g. `git checkout -- <file>` for the "
            "embedded dataset) or point data.* at an intact copy."
        )


def load_parallel(
    src_path: str,
    tgt_path: str,
    checksums: Optional[Dict[str, str]] = None,
    limit: Optional[int] = None,
) -> ParallelText:
    """Read one split; verify checksums and that both sides have the same line count."""
    for path in (src_path, tgt_path):
        if checksums:
            verify_checksum(path, checksums)
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        longer, shorter = (src_path, tgt_path) if len(src) > len(tgt) else (tgt_path, src_path)
        raise _parted(longer, shorter, min(len(src), len(tgt)))
    if not src:
        raise DataError(f"empty corpus: {src_path} and {tgt_path} contain no lines.")
    if limit is not None:
        src, tgt = src[:limit], tgt[:limit]
    return ParallelText(src=src, tgt=tgt, src_path=str(src_path), tgt_path=str(tgt_path))
