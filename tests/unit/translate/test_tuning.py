"""Choosing beam size and length penalty from a grid."""

from dist_lstm.translate.tuning import GridPoint, GridResult, grid_options


def test_greedy_is_tried_once_and_every_other_beam_with_every_alpha():
    assert grid_options([5, 1, 5], [0.5, 0.0]) == [(1, 0.0), (5, 0.0), (5, 0.5)]


def point(beam, alpha, bleu):
    return GridPoint(beam=beam, alpha=alpha, bleu=bleu, chrf=50.0, seconds=1.0)


def test_best_is_the_highest_bleu_and_ties_go_to_the_cheaper_search():
    result = GridResult([point(1, 0.0, 30.0), point(5, 0.0, 31.0), point(5, 0.6, 31.5)], "sig")
    assert (result.best.beam, result.best.alpha) == (5, 0.6)
    tied = GridResult([point(10, 0.2, 31.5), point(5, 0.6, 31.501), point(5, 0.4, 31.499)], "sig")
    assert (tied.best.beam, tied.best.alpha) == (5, 0.4)


def test_table_has_a_row_per_beam_and_a_column_per_alpha():
    result = GridResult([point(1, 0.0, 30.0), point(5, 0.0, 31.0), point(5, 0.6, 31.5)], "sig")
    header, greedy, beam5 = result.table().splitlines()
    assert header.split()[-2:] == ["0.00", "0.60"]
    assert greedy.split() == ["1", "30.00"]
    assert beam5.split() == ["5", "31.00", "31.50"]
    report = result.report()
    assert report["best"] == {"beam": 5, "alpha": 0.6, "bleu": 31.5, "chrf": 50.0}
    assert len(report["grid"]) == 3 and report["bleu_signature"] == "sig"
