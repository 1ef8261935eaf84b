"""`corpus check`: statistics and problems of a parallel corpus, counted in whitespace words."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinytrans.corpus_check import check_corpus
from tinytrans.errors import UserError

LONG = " ".join(["w"] * 130)

# (source, target, what the pair is)
HAND_MADE = [
    ("a b c", "x y z", "good"),
    ("", "x", "source empty"),
    ("a", "", "target empty"),
    ("", "", "both empty"),
    ("a b c", "x y z", "duplicate of the first pair"),
    (b"caf\xe9 ok", "cafe ok", "invalid UTF-8 in the source, good otherwise"),
    ("one two", "w w w w w w w", "ratio outlier: 7 words > 3 x 2"),
    ("one", "w w w w w", "extreme ratio but only 5 words: kept"),
    (LONG, LONG, "too long"),
]


@pytest.fixture
def hand_made(parallel_corpus) -> Path:
    return parallel_corpus([s for s, _, _ in HAND_MADE], [t for _, t, _ in HAND_MADE])


def test_counts_of_a_hand_made_corpus(hand_made: Path) -> None:
    report = check_corpus(str(hand_made), "en", "de")
    assert report.pairs == 9
    assert (report.count("src_empty"), report.count("tgt_empty"), report.both_empty) == (2, 2, 1)
    assert report.count("duplicates") == 1
    assert (report.count("src_invalid"), report.count("tgt_invalid")) == (1, 0)
    assert report.count("too_long") == 1
    assert report.count("ratio_outliers") == 1
    assert report.trainable == 4  # good, its duplicate, the invalid-UTF-8 pair, the short one
    assert report.trainable_as_is == 0  # invalid UTF-8 stops `train` unless it is replaced
    assert list(report.src_lengths) == [3, 0, 1, 0, 3, 2, 2, 1, 130]
    assert list(report.tgt_lengths) == [3, 1, 0, 0, 3, 2, 7, 5, 130]


def test_every_problem_is_recorded_with_its_line_numbers(hand_made: Path) -> None:
    lines = check_corpus(str(hand_made), "en", "de").lines
    assert lines == {"src_empty": [2, 4], "tgt_empty": [3, 4], "src_invalid": [6],
                     "tgt_invalid": [], "duplicates": [5], "too_long": [9], "ratio_outliers": [7]}


def test_where_lists_the_first_line_numbers_of_each_problem(parallel_corpus) -> None:
    prefix = parallel_corpus(["a"] + [""] * 8, ["x"] * 9)
    where = check_corpus(str(prefix), "en", "de").where(shown=5)
    assert where == ["empty en: line 2, 3, 4, 5, 6 and 3 more",
                     "duplicate pair: line 3, 4, 5, 6, 7 and 2 more"]


def test_json_has_counts_all_line_numbers_percentiles_and_verdict(hand_made: Path) -> None:
    data = check_corpus(str(hand_made), "en", "de").to_json("c")
    assert data["counts"]["src_empty"] == 2 and data["lines"]["src_empty"] == [2, 4]
    assert data["length_percentiles"]["tgt"]["p100"] == 130
    assert data["trainable_pairs"] == 0 and data["trainable_pairs_with_utf8_replace"] == 4
    assert data["verdict"] == "not trainable as is"


def test_rows_show_the_counts(hand_made: Path) -> None:
    report = check_corpus(str(hand_made), "en", "de")
    rows = {label: (src, tgt) for label, src, tgt in report.rows()}
    assert rows["pairs"] == ("9", "9")
    assert rows["empty lines"] == ("2", "2")
    assert rows["invalid UTF-8 lines"] == ("1", "0")
    assert rows["duplicate pairs"][0] == "1"
    assert rows["trainable pairs"][0] == "0"  # as is: the invalid UTF-8 line stops training
    assert rows["  with --utf8-errors replace"][0] == "4"
    assert rows["length p100 (words)"] == ("130", "130")
    assert rows["words"] == (f"{3 + 1 + 3 + 2 + 2 + 1 + 130}", f"{3 + 1 + 3 + 2 + 7 + 5 + 130}")


def test_invalid_utf8_is_a_problem(hand_made: Path) -> None:
    problems = check_corpus(str(hand_made), "en", "de").problems()
    assert len(problems) == 1
    assert "invalid UTF-8" in problems[0] and "1 en" in problems[0]


def test_a_clean_corpus_has_no_problems(parallel_corpus) -> None:
    prefix = parallel_corpus(["a b", "c d e", ""], ["x y", "z", "w"])
    assert check_corpus(str(prefix), "en", "de").problems() == []


def test_limits_are_parameters(hand_made: Path) -> None:
    report = check_corpus(str(hand_made), "en", "de", max_length=200, max_ratio=10.0)
    assert (report.count("too_long"), report.count("ratio_outliers"), report.trainable) == (0, 0, 6)


def test_an_all_empty_corpus_has_a_problem(parallel_corpus) -> None:
    prefix = parallel_corpus(["", " ", ""], ["", "", "\t"])
    report = check_corpus(str(prefix), "en", "de")
    assert report.trainable == 0
    assert any("no pair survives" in p for p in report.problems())


def test_a_corpus_without_lines_has_a_problem(parallel_corpus) -> None:
    prefix = parallel_corpus([], [])
    report = check_corpus(str(prefix), "en", "de")
    assert report.pairs == 0
    assert report.problems() == ["the corpus has no lines"]
    assert {label: src for label, src, _ in report.rows()}["pairs"] == "0"


def test_only_unusable_pairs_is_a_problem(parallel_corpus) -> None:
    prefix = parallel_corpus([LONG, "a"], [LONG, "w w w w w w w w"])
    assert check_corpus(str(prefix), "en", "de").problems()


def test_strict_utf8_raises_with_file_and_line(hand_made: Path) -> None:
    with pytest.raises(UserError, match=r"corpus\.en:6:"):
        check_corpus(str(hand_made), "en", "de", utf8="strict")


def test_unequal_sides_are_a_user_error(parallel_corpus) -> None:
    prefix = parallel_corpus(["a", "b", "c"], ["x"])
    with pytest.raises(UserError, match="has 3 lines .* has 1"):
        check_corpus(str(prefix), "en", "de")


def test_the_bundled_test_split_is_clean(bundled: Path) -> None:
    report = check_corpus(str(bundled / "test"), "en", "de")
    assert report.pairs == 1000
    assert all(count == 0 for count in report.to_json("test")["counts"].values())
    assert report.problems() == []
