"""The rule that picks which decoding of a run is quoted: validation scores only, and
every committed decode_choices result records the choice the rule makes."""

import json
import sys

import pytest

from tests.helpers.paths import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import decode_choices  # noqa: E402

RESULTS = sorted((ROOT / "benchmarks" / "results").glob("decode_choices_*.json"))


def candidate(name, kind, valid_bleu, size=1):
    return {
        "name": name,
        "kind": kind,
        "checkpoints": [f"c{i}" for i in range(size)],
        "valid_bleu": valid_bleu,
    }


def test_highest_validation_bleu_wins():
    chosen = decode_choices.choose(
        [candidate("single", "single", 41.2), candidate("last_5", "average", 41.61, 5)]
    )
    assert chosen["name"] == "last_5"


def test_hundredths_below_rounding_never_outrank_the_cheaper_decoding():
    chosen = decode_choices.choose(
        [
            candidate("ensemble_3", "ensemble", 41.634, 3),
            candidate("last_5", "average", 41.626, 5),
            candidate("last_3", "average", 41.631, 3),
            candidate("single", "single", 41.6299),
        ]
    )
    assert chosen["name"] == "single"  # all four are 41.63 at two decimals


def test_ties_among_averages_go_to_fewer_checkpoints_then_the_listed_order():
    tied = [
        candidate("last_5", "average", 40.0, 5),
        candidate("to_best_3", "average", 40.0, 3),
        candidate("last_3", "average", 40.0, 3),
    ]
    assert decode_choices.choose(tied)["name"] == "to_best_3"


def test_a_candidate_without_a_validation_score_is_never_chosen():
    chosen = decode_choices.choose(
        [candidate("ensemble_3", "ensemble", None, 3), candidate("single", "single", 10.0)]
    )
    assert chosen["name"] == "single"
    with pytest.raises(ValueError, match="validation"):
        decode_choices.choose([candidate("ensemble_3", "ensemble", None, 3)])


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_every_committed_result_records_what_the_rule_chooses(path):
    report = json.loads(path.read_text())
    assert report["rule"] == decode_choices.SELECTION_RULE
    again = decode_choices.choose(report["candidates"])
    assert report["chosen"]["name"] == again["name"]
    assert report["chosen"]["valid_bleu"] == again["valid_bleu"]
    assert report["chosen"]["checkpoints"] == again["checkpoints"]
    assert report["chosen"]["test"]["beam"] == report["tune_search_valid"]["best"]["beam"]


# The converged run each recipe's header quotes.
RECIPE_RESULTS = {
    "de_en": "decode_choices_de_en_continued.json",
    "fr_en": "decode_choices_fr_en.json",
    "en_fr": "decode_choices_en_fr.json",
}


@pytest.mark.parametrize("experiment", sorted(RECIPE_RESULTS))
def test_recipe_headers_recommend_the_decoding_the_rule_chose(experiment):
    chosen = json.loads((ROOT / "benchmarks" / "results" / RECIPE_RESULTS[experiment]).read_text())[
        "chosen"
    ]
    header = (ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text()
    evaluate = next(line for line in header.splitlines() if "dist-lstm evaluate" in line)
    assert f"--beam {chosen['beam']} --alpha {chosen['alpha']}" in evaluate
    averages = [line for line in header.splitlines() if "dist-lstm average" in line]
    if chosen["kind"] == "average":
        assert averages == [averages[0]] and f"--last {len(chosen['checkpoints'])}" in averages[0]
        assert chosen["name"].startswith("last_")
    else:
        assert chosen["kind"] == "single" and not averages
    assert f"{chosen['test']['bleu']:.2f} BLEU" in header.replace("\n#", "")


def test_the_readme_quotes_each_recipes_chosen_decoding():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if "`de_en`" in line)
    for name in RECIPE_RESULTS.values():
        chosen = json.loads((ROOT / "benchmarks" / "results" / name).read_text())["chosen"]
        assert f"{chosen['test']['bleu']:.2f}" in row, name
