"""SentencePiece subword tokenizer: trained once per corpus and option set, then cached.

The cache key hashes the training files' contents and every option that changes the model,
so a second run with the same data reuses the trained model in milliseconds while any change
(another vocabulary size, an edited corpus) trains a fresh one. Ids 0-3 are fixed as
PAD/UNK/BOS/EOS for both languages so the model code can rely on them.

A joint model's pieces include every source-only subword; the decoder has no use for
them. `with_target_pieces` keeps, on the target side, only the pieces that occur in the
training targets (data/prepared.py collects them while encoding) and the specials: the
decoder's embedding and output layer shrink to those (on Multi30k de->en with 8k joint
BPE, 4,269 of 8,000), which is what a toolkit with a separate target vocabulary builds,
and saves a third of the output projection's work.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import sentencepiece as spm

from dist_lstm.batch import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from dist_lstm.data.corpus import sha256_of, stream_lines
from dist_lstm.errors import DataError

log = logging.getLogger(__name__)

ROLES = ("src", "tgt")
TARGET_VOCAB_MULTIPLE = 64  # see Tokenizer.with_target_pieces
META_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TokenizerOptions:
    """Everything that changes the trained SentencePiece model (and so its cache key): the
    data.tokenizer keys of that name, whose defaults the schema's TokenizerConfig owns."""

    type: str
    joint: bool
    vocab_size: int
    character_coverage: float
    input_sentence_size: int


class Tokenizer:
    """Source and target SentencePiece models behind one interface (they may be one model).

    It holds the serialized models, so it can travel inside a checkpoint file as bytes
    and a checkpoint needs no folder beside it.
    """

    def __init__(self, models: Dict[str, Any]):
        """`models`: {"src": bytes, "tgt": bytes} and optionally "tgt_pieces", the target
        model's piece ids the target side keeps (see `with_target_pieces`); as `payload`
        returns it, and as checkpoints store it."""
        self.models = {role: bytes(models[role]) for role in ROLES}
        self._sp = {
            role: spm.SentencePieceProcessor(model_proto=proto)
            for role, proto in self.models.items()
        }
        pieces = models.get("tgt_pieces")
        self.tgt_pieces: Optional[List[int]] = None if pieces is None else list(pieces)
        self._to_target: Dict[int, int] = {}
        if self.tgt_pieces is not None:
            if self.tgt_pieces[:4] != [PAD_ID, UNK_ID, BOS_ID, EOS_ID]:
                raise DataError("tokenizer: the target vocabulary must start with the specials")
            self._to_target = {piece: i for i, piece in enumerate(self.tgt_pieces)}

    @property
    def payload(self) -> Dict[str, Any]:
        """Everything needed to rebuild this tokenizer (checkpoints, other ranks)."""
        out: Dict[str, Any] = dict(self.models)
        if self.tgt_pieces is not None:
            out["tgt_pieces"] = list(self.tgt_pieces)
        return out

    def with_target_pieces(self, used: Iterable[int]) -> "Tokenizer":
        """This tokenizer with the target side restricted to the `used` piece ids of the
        target model (and the specials).

        The count is rounded up to a multiple of TARGET_VOCAB_MULTIPLE with unused pieces:
        the output projection's GEMM is much slower at an odd size (benchmarks/RESULTS.md).
        """
        used = set(int(piece) for piece in used)
        specials = [PAD_ID, UNK_ID, BOS_ID, EOS_ID]
        pieces = specials + sorted(used - set(specials))
        total = self._sp["tgt"].get_piece_size()
        wanted = min(total, -(-len(pieces) // TARGET_VOCAB_MULTIPLE) * TARGET_VOCAB_MULTIPLE)
        unused = (piece for piece in range(total) if piece not in used and piece > EOS_ID)
        pieces += [next(unused) for _ in range(wanted - len(pieces))]
        return Tokenizer({**self.models, "tgt_pieces": pieces})

    @property
    def fingerprint(self) -> str:
        """Identifies the models and target vocabulary (ranks compare it)."""
        digest = hashlib.sha256(self.models["src"] + self.models["tgt"])
        digest.update(json.dumps(self.tgt_pieces).encode())
        return digest.hexdigest()[:20]

    def target_lookup(self) -> Optional["np.ndarray"]:
        """Target model id -> target vocabulary id (UNK for dropped pieces), or None when
        the target side keeps the whole model."""
        if self.tgt_pieces is None:
            return None
        lookup = np.full(self._sp["tgt"].get_piece_size(), UNK_ID, dtype=np.int64)
        lookup[self.tgt_pieces] = np.arange(len(self.tgt_pieces))
        return lookup

    def model_ids(self, role: str, sentences: Sequence[str], threads: int = 1) -> List[List[int]]:
        """Ids of the role's SentencePiece model (before any target-vocabulary mapping),
        encoded on `threads` threads."""
        return self._sp[role].encode(list(sentences), out_type=int, num_threads=threads)

    def model_size(self, role: str) -> int:
        return self._sp[role].get_piece_size()

    @property
    def joint(self) -> bool:
        return self.models["src"] == self.models["tgt"]

    @property
    def src_vocab_size(self) -> int:
        return self._sp["src"].get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        if self.tgt_pieces is not None:
            return len(self.tgt_pieces)
        return self._sp["tgt"].get_piece_size()

    def encode(self, role: str, sentences: Sequence[str]) -> List[List[int]]:
        """Subword ids of each sentence, without BOS/EOS. Target pieces outside the
        target vocabulary become UNK."""
        ids = self._sp[role].encode(list(sentences), out_type=int)
        if role == "tgt" and self.tgt_pieces is not None:
            lookup = self._to_target
            return [[lookup.get(piece, UNK_ID) for piece in seq] for seq in ids]
        return ids

    def decode(self, role: str, ids: Sequence[Sequence[int]]) -> List[str]:
        """Detokenized text; the specials are dropped so scoring sees plain sentences."""
        specials = {PAD_ID, BOS_ID, EOS_ID}
        if role == "tgt" and self.tgt_pieces is not None:
            pieces = self.tgt_pieces
            ids = [[pieces[i] for i in seq] for seq in ids]
        return self._sp[role].decode([[i for i in seq if i not in specials] for seq in ids])

    def pieces(self, role: str, ids: Sequence[int]) -> List[str]:
        """The subword pieces of one sentence's ids ("▁" starts a word), as the model saw
        them: what attention weights are over."""
        if role == "tgt" and self.tgt_pieces is not None:
            ids = [self.tgt_pieces[i] for i in ids]
        return [self._sp[role].id_to_piece(int(i)) for i in ids]

    def save(self, directory: str | Path) -> Path:
        """Write the model file(s) and a small index into `directory` (a run's tokenizer/)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = (
            {"src": "spm.model", "tgt": "spm.model"}
            if self.joint
            else {role: f"{role}.model" for role in ROLES}
        )
        for role in ROLES:
            (directory / names[role]).write_bytes(self.models[role])
        meta: Dict[str, Any] = dict(names)
        if self.tgt_pieces is not None:
            meta["tgt_pieces"] = self.tgt_pieces
        (directory / META_FILE).write_text(json.dumps(meta) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Tokenizer":
        directory = Path(directory)
        meta = directory / META_FILE
        if not meta.is_file():
            raise DataError(
                f"no tokenizer in {directory}: {META_FILE} is missing. Point at the "
                "tokenizer/ folder written by a training run."
            )
        names = json.loads(meta.read_text())
        models: Dict[str, Any] = {role: (directory / names[role]).read_bytes() for role in ROLES}
        if "tgt_pieces" in names:
            models["tgt_pieces"] = names["tgt_pieces"]
        return cls(models)


def cache_key(
    src_paths: Sequence[str], tgt_paths: Sequence[str], limit: Optional[int], options
) -> str:
    """Hash of the training files' contents, how many lines were used, and the options."""
    payload = {
        "src": [sha256_of(path) for path in src_paths],
        "tgt": [sha256_of(path) for path in tgt_paths],
        "lines": limit,
        "options": asdict(options),
        "sentencepiece": spm.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _sentences(paths: Sequence[str], limit: Optional[int]) -> Iterator[str]:
    """Non-empty lines of each file (its first `limit` lines), streamed."""
    for path in paths:
        seen = 0
        for lines in stream_lines(path):
            if limit is not None:
                lines = lines[: limit - seen]
            seen += len(lines)
            yield from (line for line in lines if line.strip())
            if limit is not None and seen >= limit:
                break


class _WatchedSentences:
    """The sentences SentencePiece trains on, remembering a DataError raised while it reads
    them: SentencePiece wraps it in a RuntimeError whose text is not for the user."""

    def __init__(self, sentences: Iterator[str]):
        self.sentences = sentences
        self.error: Optional[DataError] = None

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self.sentences
        except DataError as exc:
            self.error = exc
            raise


def _train_model(paths: Sequence[str], limit: Optional[int], prefix: Path, options) -> None:
    sentences = _sentences(paths, limit)
    first = next(sentences, None)
    if first is None:
        raise DataError(
            f"cannot train a tokenizer: {', '.join(map(str, paths))} has no non-empty line."
        )
    watched = _WatchedSentences(itertools.chain([first], sentences))
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(watched),
            model_prefix=str(prefix),
            model_type=options.type,
            vocab_size=options.vocab_size,
            character_coverage=options.character_coverage,
            input_sentence_size=options.input_sentence_size,
            shuffle_input_sentence=True,
            # Small corpora may not support the requested size; take what they support.
            hard_vocab_limit=False,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            num_threads=max(1, min(4, os.cpu_count() or 1)),
            minloglevel=2,
        )
    except RuntimeError:
        if watched.error is not None:  # e.g. invalid UTF-8 on some line: name it plainly
            raise watched.error from None
        raise


def train_or_load(
    src_paths: Sequence[str],
    tgt_paths: Sequence[str],
    limit: Optional[int],
    options: TokenizerOptions,
    cache_dir: str | Path,
) -> Tokenizer:
    """Return the cached tokenizer for this corpus and options, training it on a miss.
    The corpora are streamed (SentencePiece samples `input_sentence_size` sentences);
    `limit`: lines of each file."""
    key = cache_key(src_paths, tgt_paths, limit, options)
    target = Path(cache_dir).expanduser() / "tokenizers" / key
    if (target / META_FILE).is_file():
        log.info("tokenizer: cache hit %s", target)
        return Tokenizer.load(target)
    log.info(
        "tokenizer: training SentencePiece (%s, vocab %d) -> %s",
        options.type,
        options.vocab_size,
        target,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Train into a scratch folder and rename, so a crash never leaves a half-written cache.
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        if options.joint:
            _train_model([*src_paths, *tgt_paths], limit, scratch / "spm", options)
            files = {r: scratch / "spm.model" for r in ROLES}
        else:
            _train_model(src_paths, limit, scratch / "src", options)
            _train_model(tgt_paths, limit, scratch / "tgt", options)
            files = {r: scratch / f"{r}.model" for r in ROLES}
        Tokenizer({r: files[r].read_bytes() for r in ROLES}).save(scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process finished the same key first; use theirs
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        if scratch.exists() and scratch != target:
            shutil.rmtree(scratch, ignore_errors=True)
    return Tokenizer.load(target)
