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
    assert (report.src_empty, report.tgt_empty, report.both_empty) == (2, 2, 1)
    assert report.duplicates == 1
    assert (report.src_invalid, report.tgt_invalid) == (1, 0)
    assert report.too_long == 1
    assert report.ratio_outliers == 1
    assert report.trainable == 4  # good, its duplicate, the invalid-UTF-8 pair, the short one
    assert report.src_lengths == [3, 0, 1, 0, 3, 2, 2, 1, 130]
    assert report.tgt_lengths == [3, 1, 0, 0, 3, 2, 7, 5, 130]


def test_rows_show_the_counts(hand_made: Path) -> None:
    report = check_corpus(str(hand_made), "en", "de")
    rows = {label: (src, tgt) for label, src, tgt in report.rows()}
    assert rows["pairs"] == ("9", "9")
    assert rows["empty lines"] == ("2", "2")
    assert rows["invalid UTF-8 lines"] == ("1", "0")
    assert rows["duplicate pairs"][0] == "1"
    assert rows["trainable pairs"][0] == "4"
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
    assert (report.too_long, report.ratio_outliers, report.trainable) == (0, 0, 6)


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
    assert report.src_empty == report.tgt_empty == report.src_invalid == report.tgt_invalid == 0
    assert report.problems() == []
