"""Word alignments from subword attention, in Pharaoh format."""

import numpy as np

from dist_lstm.translate.alignment import (
    pharaoh,
    word_alignment,
    word_attention,
    word_of_each_piece,
)


def test_pieces_are_grouped_into_words_at_the_boundary_mark():
    assert word_of_each_piece(["▁Ein", "▁Hund", "e", "▁", "X", "▁."]) == [0, 1, 1, 2, 2, 3]
    assert word_of_each_piece(["ab", "c"]) == [0, 0]  # a first piece always starts a word


def test_weights_are_summed_per_word_and_each_target_word_takes_its_heaviest_source():
    src = ["▁Ein", "▁Hund", "e", "."]  # words: Ein | Hunde.
    tgt = ["▁A", "▁dog", "s"]  # words: A | dogs
    attention = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],
            [0.2, 0.3, 0.3, 0.2],  # "dog": 0.8 on Hunde.
            [0.6, 0.2, 0.1, 0.1],  # "s": 0.6 on Ein, but the word "dogs" sums to 1.2 vs 0.8
        ]
    )
    words = word_attention(attention, src, tgt)
    np.testing.assert_allclose(words, [[0.7, 0.3], [0.8, 1.2]])
    assert word_alignment(attention, src, tgt) == [(0, 0), (1, 1)]
    assert pharaoh([(1, 1), (0, 0), (0, 2)]) == "0-0 0-2 1-1"


def test_an_empty_side_aligns_nothing():
    assert word_alignment(np.zeros((0, 2)), ["▁a", "▁b"], []) == []
