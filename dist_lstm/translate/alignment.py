"""Word alignments from attention: which source word each output word attended to most.

Attention is over subword pieces; SentencePiece marks a word's first piece with "▁", so
pieces are grouped into words, the weights summed per (target word, source word), and each
target word aligned to its heaviest source word. Written in the Pharaoh format of
fast_align and fairseq's --print-alignment: "i-j" with zero-based source word i and target
word j.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

WORD_START = "\u2581"  # SentencePiece's word-boundary mark


def word_of_each_piece(pieces: Sequence[str]) -> List[int]:
    """Zero-based word number of each piece. A bare "▁" piece (a word whose first
    character has no piece of its own) starts the word the next piece continues."""
    words, current, boundary_pending = [], -1, False
    for index, piece in enumerate(pieces):
        starts = index == 0 or (piece.startswith(WORD_START) and not boundary_pending)
        if starts:
            current += 1
        words.append(current)
        boundary_pending = piece == WORD_START
    return words


def word_attention(
    attention: np.ndarray, src_pieces: Sequence[str], tgt_pieces: Sequence[str]
) -> np.ndarray:
    """attention (T, S) over pieces -> (target words, source words), summed per word."""
    src_words, tgt_words = word_of_each_piece(src_pieces), word_of_each_piece(tgt_pieces)
    out = np.zeros((max(tgt_words, default=-1) + 1, max(src_words, default=-1) + 1))
    np.add.at(out, (np.asarray(tgt_words)[:, None], np.asarray(src_words)[None, :]), attention)
    return out


def word_alignment(
    attention: np.ndarray, src_pieces: Sequence[str], tgt_pieces: Sequence[str]
) -> List[Tuple[int, int]]:
    """(source word, target word) pairs: each target word with its heaviest source word."""
    if not len(src_pieces) or not len(tgt_pieces):
        return []
    words = word_attention(attention, src_pieces, tgt_pieces)
    return [(int(i), j) for j, i in enumerate(words.argmax(axis=1))]


def pharaoh(pairs: Sequence[Tuple[int, int]]) -> str:
    """ "0-0 1-2 ..." in source order, as alignment tools write it."""
    return " ".join(f"{i}-{j}" for i, j in sorted(pairs))
