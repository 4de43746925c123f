"""SentencePiece subword tokenizer: trained once per corpus and option set, then cached.

The cache key hashes the training files' contents and every option that changes the model,
so a second run with the same data reuses the trained model in milliseconds while any change
(another vocabulary size, an edited corpus) trains a fresh one. Ids 0-3 are fixed as
PAD/UNK/BOS/EOS for both languages so the model code can rely on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import sentencepiece as spm

from dist_lstm.data.corpus import ParallelText, sha256_of
from dist_lstm.errors import DataError

log = logging.getLogger(__name__)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
ROLES = ("src", "tgt")
META_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TokenizerOptions:
    """Everything that changes the trained SentencePiece model (and so its cache key)."""

    type: str = "bpe"
    joint: bool = True
    vocab_size: int = 8000
    character_coverage: float = 1.0
    input_sentence_size: int = 0


class Tokenizer:
    """Source and target SentencePiece models behind one interface (they may be one model).

    It holds the serialized models, so it can travel inside a checkpoint file as bytes
    and a checkpoint needs no folder beside it.
    """

    def __init__(self, models: Dict[str, bytes]):
        self.models = {role: bytes(models[role]) for role in ROLES}
        self._sp = {
            role: spm.SentencePieceProcessor(model_proto=proto)
            for role, proto in self.models.items()
        }

    @property
    def joint(self) -> bool:
        return self.models["src"] == self.models["tgt"]

    @property
    def src_vocab_size(self) -> int:
        return self._sp["src"].get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self._sp["tgt"].get_piece_size()

    def encode(self, role: str, sentences: Sequence[str]) -> List[List[int]]:
        """Subword ids of each sentence, without BOS/EOS."""
        return self._sp[role].encode(list(sentences), out_type=int)

    def decode(self, role: str, ids: Sequence[Sequence[int]]) -> List[str]:
        """Detokenized text; the specials are dropped so scoring sees plain sentences."""
        specials = {PAD_ID, BOS_ID, EOS_ID}
        return self._sp[role].decode([[i for i in seq if i not in specials] for seq in ids])

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
        (directory / META_FILE).write_text(json.dumps(names, indent=2) + "\n")
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
        return cls({role: (directory / names[role]).read_bytes() for role in ROLES})


def cache_key(train: ParallelText, options: TokenizerOptions) -> str:
    """Hash of the training text's files, how many lines were used, and the options."""
    payload = {
        "src": sha256_of(train.src_path),
        "tgt": sha256_of(train.tgt_path),
        "lines": len(train),
        "options": asdict(options),
        "sentencepiece": spm.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _train_model(sentences: List[str], prefix: Path, options: TokenizerOptions) -> None:
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise DataError("cannot train a tokenizer: the training text has no non-empty line.")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
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


def train_or_load(
    train: ParallelText, options: TokenizerOptions, cache_dir: str | Path
) -> Tokenizer:
    """Return the cached tokenizer for this corpus and options, training it on a miss."""
    key = cache_key(train, options)
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
            _train_model(train.src + train.tgt, scratch / "spm", options)
            files = {r: scratch / "spm.model" for r in ROLES}
        else:
            _train_model(train.src, scratch / "src", options)
            _train_model(train.tgt, scratch / "tgt", options)
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
