"""The data.* options that shape what a run trains on, each declared once, by what it shapes.

Two checks derive their lists from the groups below, so a key added to a group reaches both:
- the prepared token files (data/prepared.py) are named after PREPARED_KEYS and are stale
  when one of them changed;
- a resumed run (checkpoint/resume.py) must keep RESUME_KEYS, because the saved position in
  the epoch only means something for the same batches.
Every key of DataConfig is in a group or in NOT_SHAPING (tests/unit/data/test_shaping.py).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

# A key that starts with EACH_CORPUS names that field of every data.corpora entry.
EACH_CORPUS = "corpora[]."
# Every key of data.tokenizer: each changes the trained SentencePiece model (or, with
# prune_target_vocab, the target ids), so a key added there shapes the data as well.
EVERY_TOKENIZER_KEY = "tokenizer.*"

# The training split's token files, and the tokenizer trained on its corpora.
TRAIN_FILES: Tuple[str, ...] = (
    "src_lang",  # src_lang/tgt_lang name the pair; the shipped data's paths follow them
    "tgt_lang",
    "max_len",
    "max_len_ratio",
    "max_train_examples",
    EVERY_TOKENIZER_KEY,
    "train_src",
    "train_tgt",
    EACH_CORPUS + "src",
    EACH_CORPUS + "tgt",
)
# The validation split's token files (not the batches trained on).
VALID_FILES: Tuple[str, ...] = ("max_valid_examples", "valid_src", "valid_tgt")
# The batches cut from the training split: token budget and each corpus's share of an
# epoch (the order also depends on the top-level seed, which resume checks on its own).
BATCHES: Tuple[str, ...] = ("max_tokens", EACH_CORPUS + "weight")
# Of the keys above, the raw files: preparation records them as absolute paths.
INPUT_FILES: Tuple[str, ...] = (
    "train_src",
    "train_tgt",
    "valid_src",
    "valid_tgt",
    EACH_CORPUS + "src",
    EACH_CORPUS + "tgt",
)
# The data.* keys that shape nothing trained on: a label, start-up checks of the files,
# where prepared files go, and the test split (scored once, after training).
NOT_SHAPING: Tuple[str, ...] = (
    "name",
    "languages",
    "checksums",
    "test_src",
    "test_tgt",
    "prepared_dir",
    "cache_dir",
)

PREPARED_KEYS: Tuple[str, ...] = TRAIN_FILES + VALID_FILES
RESUME_KEYS: Tuple[str, ...] = TRAIN_FILES + BATCHES


def option_values(data: Mapping[str, Any], keys: Sequence[str]) -> Dict[str, Any]:
    """{"data.KEY": value} of `keys` in `data` (a DictConfig or a resolved dict), with each
    corpus's and tokenizer key spelled out: "data.corpora[0].weight", "data.tokenizer.type".

    A key `data` lacks reads as None (a config saved before the key existed). The fields of
    one corpus stay together, in the place of the first EACH_CORPUS key.
    """
    corpus_fields = [key[len(EACH_CORPUS) :] for key in keys if key.startswith(EACH_CORPUS)]
    values: Dict[str, Any] = {}
    for key in keys:
        if key == EVERY_TOKENIZER_KEY:
            tokenizer = data.get("tokenizer") or {}
            values.update({f"data.tokenizer.{name}": tokenizer[name] for name in tokenizer})
        elif key.startswith(EACH_CORPUS):
            if key[len(EACH_CORPUS) :] == corpus_fields[0]:
                values.update(_corpus_values(data.get("corpora") or [], corpus_fields))
        else:
            values[f"data.{key}"] = data.get(key)
    return values


def _corpus_values(corpora: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> Dict[str, Any]:
    return {
        f"data.corpora[{i}].{field}": corpus.get(field)
        for i, corpus in enumerate(corpora)
        for field in fields
    }
