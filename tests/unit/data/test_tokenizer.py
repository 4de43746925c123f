from dataclasses import asdict

import pytest
from omegaconf import OmegaConf

from dist_lstm.batch import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from dist_lstm.config.schema import TokenizerConfig
from dist_lstm.data import tokenizer as tok
from dist_lstm.data.prepared import tokenizer_options
from tests.helpers.corpus import write_lines

SRC = ["ein kleiner hund läuft", "zwei männer spielen fußball", "eine frau liest ein buch"] * 40
TGT = ["a small dog runs", "two men play soccer", "a woman reads a book"] * 40
TOKENIZER = asdict(TokenizerConfig())


@pytest.fixture
def corpus(tmp_path):
    """(source paths, target paths, line limit): what train_or_load streams."""
    return (
        [str(write_lines(tmp_path / "train.de", SRC))],
        [str(write_lines(tmp_path / "train.en", TGT))],
        None,
    )


def options(**kw):
    """The schema's tokenizer defaults with a 60-piece vocabulary, and `kw`."""
    return tokenizer_options(OmegaConf.create({"tokenizer": {**TOKENIZER, "vocab_size": 60, **kw}}))


def test_second_run_hits_the_cache(corpus, tmp_path, monkeypatch):
    first = tok.train_or_load(*corpus, options(), tmp_path / "cache")

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of using the cache")

    monkeypatch.setattr(tok, "_train_model", no_training)
    second = tok.train_or_load(*corpus, options(), tmp_path / "cache")
    assert second.models == first.models
    assert second.encode("src", SRC[:2]) == first.encode("src", SRC[:2])
    # Another option is another key: the cache misses and training runs.
    with pytest.raises(AssertionError, match="trained again"):
        tok.train_or_load(*corpus, options(vocab_size=50), tmp_path / "cache")


@pytest.mark.parametrize("joint", [True, False])
@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_round_trip_and_specials(corpus, tmp_path, joint, kind):
    t = tok.train_or_load(*corpus, options(joint=joint, type=kind), tmp_path / "c")
    assert t.joint == joint
    ids = t.encode("tgt", TGT[:3])
    assert all(i > EOS_ID for seq in ids for i in seq)
    assert t.decode("tgt", [[BOS_ID, *s, EOS_ID, PAD_ID] for s in ids]) == TGT[:3]
    saved = tok.Tokenizer.load(t.save(tmp_path / "run" / "tokenizer"))
    assert saved.encode("src", SRC[:3]) == t.encode("src", SRC[:3])


def test_target_vocab_keeps_only_target_pieces_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setattr(tok, "TARGET_VOCAB_MULTIPLE", 8)
    src = ["das haus ist klein", "der hund bellt laut", "ein kleines haus"] * 20
    tgt = ["the house is small", "the dog barks", "a small house"] * 20
    files = (
        [str(write_lines(tmp_path / "train.de", src))],
        [str(write_lines(tmp_path / "train.en", tgt))],
    )
    joint = tok.train_or_load(*files, None, options(vocab_size=60), tmp_path / "c")
    used = {piece for ids in joint.model_ids("tgt", tgt) for piece in ids}  # as prepare() collects
    pruned = joint.with_target_pieces(used)
    assert pruned.src_vocab_size == joint.src_vocab_size  # the source side is untouched
    assert pruned.tgt_vocab_size < joint.tgt_vocab_size
    assert pruned.tgt_vocab_size % 8 == 0  # rounded up for the output GEMM
    ids = pruned.encode("tgt", ["the small dog"])
    assert max(max(seq) for seq in ids) < pruned.tgt_vocab_size
    assert pruned.decode("tgt", ids) == ["the small dog"]
    assert pruned.encode("src", ["das haus"]) == joint.encode("src", ["das haus"])
    # a piece only the source side uses is unknown on the target side
    assert UNK_ID in pruned.encode("tgt", ["bellt"])[0]
    again = tok.Tokenizer.load(pruned.save(tmp_path / "saved"))
    assert again.payload == pruned.payload == tok.Tokenizer(pruned.payload).payload
