"""Constraints files and glossaries: parsed, matched, and every mistake one line naming the place."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from conftest import write_lines
from tinytrans.errors import UserError
from tinytrans.terminology import (MAX_PHRASES, Glossary, TermLinks, TermMatch, check_phrases,
                                   count_lines, place_terms, read_constraints, read_glossary)


def glossary(**pairs: str) -> Glossary:
    return Glossary.from_pairs({k.replace("_", " "): v for k, v in pairs.items()})


def test_constraints_file_gives_each_lines_phrases(tmp_path: Path):
    path = write_lines(tmp_path / "c.tsv", ["Hund\troten Ball", "", "  Katze  ", "a  b\t\t"])
    assert list(read_constraints(path)) == [["Hund", "roten Ball"], [], ["Katze"], ["a b"]]
    assert count_lines(path) == 4


def test_constraints_file_that_is_not_utf8_names_the_line(tmp_path: Path):
    path = write_lines(tmp_path / "c.tsv", [b"ok", b"\xff\xfe"])
    with pytest.raises(UserError, match=r"c.tsv:2: not valid UTF-8"):
        list(read_constraints(path))


def test_too_many_or_too_long_phrases_are_refused():
    with pytest.raises(UserError, match=f"at most {MAX_PHRASES} per line"):
        check_phrases(["x"] * (MAX_PHRASES + 1), "here")
    with pytest.raises(UserError, match="here: a constraint of 501 characters"):
        check_phrases(["x" * 501], "here")
    with pytest.raises(UserError, match="here: an empty constraint"):
        check_phrases(["  "], "here")


@pytest.mark.parametrize("line, expected", [
    ("A dog runs.", ["Hund"]),
    ("Dog runs.", ["Hund"]),  # the first letter in either case
    ("The dogs run.", []),  # whole words only
    ("A hotdog.", []),
    ("A DOG runs.", []),  # the rest as written
    ("A dog and a dog.", ["Hund"]),  # once per line
    ("The cat, the dog.", ["Katze", "Hund"]),  # in order of appearance
    ("An ice cream.", ["Eiscreme"]),  # the longest term wins
    ("An ice  cream.", ["Eiscreme"]),  # spaces flexible
    ("Some ice.", ["Eis"]),
    ("", []),
])
def test_glossary_matches_whole_terms(line: str, expected: list[str]):
    terms = glossary(dog="Hund", cat="Katze", ice="Eis", ice_cream="Eiscreme")
    assert terms.constraints_for(line) == expected


def test_glossary_terms_with_regex_characters_match_literally():
    terms = glossary(**{"C++": "C++", "a.b": "x"})
    assert terms.constraints_for("I write C++ daily") == ["C++"]
    assert terms.constraints_for("axb") == []


def test_glossary_file_is_read(tmp_path: Path):
    path = write_lines(tmp_path / "g.tsv", ["dog\tHund", "", "ice cream\tEis creme"])
    terms = read_glossary(path)
    assert terms.terms == {"dog": "Hund", "ice cream": "Eis creme"}


@pytest.mark.parametrize("lines, message", [
    (["dog Hund"], r"g.tsv:1: expected 'source term<TAB>target term', found 1"),
    (["dog\tHund\tx"], r"g.tsv:1: expected .* found 3"),
    (["dog\tHund", "\tKatze"], r"g.tsv:2: an empty source term"),
    (["dog\t "], r"g.tsv:1: an empty target term"),
    (["dog\tHund", "dog\tRüde"], r"g.tsv:2: 'dog' is already 'Hund' \(line 1\), here 'Rüde'"),
    (["", "  "], r"g.tsv: the glossary has no terms"),
    ([b"dog\t\xff"], r"g.tsv:1: not valid UTF-8"),
])
def test_glossary_mistakes_name_the_line(tmp_path: Path, lines, message: str):
    path = write_lines(tmp_path / "g.tsv", lines)
    with pytest.raises(UserError, match=message):
        read_glossary(path)


def test_the_same_pair_twice_is_fine(tmp_path: Path):
    path = write_lines(tmp_path / "g.tsv", ["dog\tHund", "dog\tHund"])
    assert read_glossary(path).terms == {"dog": "Hund"}


def test_a_missing_glossary_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="no such file"):
        read_glossary(tmp_path / "missing.tsv")


def test_a_term_whose_first_letter_changes_length_in_lower_case_matches():
    terms = glossary(**{"İzmir": "Smyrna", "Straße": "street"})  # "İ".lower() is two characters
    assert terms.constraints_for("izmir and İzmir") == ["Smyrna"]
    assert terms.constraints_for("straße") == ["street"]


def reference_matches(pairs: dict[str, str], line: str) -> list[str]:
    """What the glossary finds, as one regex says it (whole words, first letter either case,
    flexible spaces, longest first): the rule's plain statement, too slow for large glossaries."""
    def pattern(term: str) -> str:
        head = f"[{re.escape(''.join({term[0], *term[0].lower(), *term[0].upper()}))}]"
        return head + r"\s+".join(re.escape(word) for word in term[1:].split(" "))
    order = sorted(pairs, key=len, reverse=True)
    regex = re.compile(r"(?<!\w)(?:" + "|".join(f"(?P<t{i}>{pattern(t)})" for i, t in
                                              enumerate(order)) + r")(?!\w)")
    found: list[str] = []
    for match in regex.finditer(line):
        target = pairs[order[int(match.lastgroup[1:])]]
        if target not in found:
            found.append(target)
    return found


@pytest.mark.parametrize("seed", range(30))
def test_the_glossary_finds_what_the_regex_rule_finds(seed: int):
    rng = random.Random(seed)
    words = ["dog", "Dog", "ice", "cream", "a", "b", "C", "+", "-", ".", "x", "İzmir", "izmir",
             "e", "mail", "dogs"]

    def text(n: int) -> str:
        parts = [rng.choice(words) for _ in range(n)]
        return "".join(p + rng.choice(["", " ", "  ", "\t"]) for p in parts).strip()
    pairs = {}
    while len(pairs) < rng.randint(1, 8):
        term = " ".join(text(rng.randint(1, 3)).split())
        # terms that differ only in their first letter's case: the rule below takes the first,
        # the glossary the one as written (test_a_term_as_written_wins_over_its_other_case)
        if term and not any(t[1:] == term[1:] and t[:1].lower() == term[:1].lower()
                            for t in pairs):
            pairs[term] = f"T{len(pairs)}"
    terms = Glossary.from_pairs(pairs)
    for _ in range(50):
        line = text(rng.randint(0, 12))
        assert terms.constraints_for(line) == reference_matches(pairs, line), (pairs, line)


def test_a_glossary_of_100000_terms_is_applied_at_the_speed_of_a_small_one():
    """A hundred thousand terms on a hundred lines: the regex of one alternative per term did
    not finish in 7 CPU-minutes; the trie's cost does not grow with the glossary."""
    pairs = {f"term{i} word{i % 97}": f"Ziel{i}" for i in range(100_000)}
    pairs["red dog"] = "roter Hund"
    terms = Glossary.from_pairs(pairs)
    lines = [f"A red dog and term{i} word{i % 97} and term{i} word0x." for i in range(100)]
    found = [terms.constraints_for(line) for line in lines]
    assert found[5] == ["roter Hund", "Ziel5"]
    assert all(f[0] == "roter Hund" and f[1] == f"Ziel{i}" for i, f in enumerate(found))


# ---------------------------------------------------------------------------------------------
# Placing terms by alignment

FREE = "Ein Mann fährt ein Fahrrad, während zwei Hunde rennen."
#        0    1    2     3    4         5       6    7     8
#  source: A(0) man(1) rides(2) a(3) bike(4) while(5) two(6) dogs(7) run.(8)
ALIGNED = [(0, 0), (1, 1), (2, 2), (4, 3), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8)]
HEADS = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 3), (5, 5), (6, 6), (7, 7), (8, 8)]  # bike -> "ein"
LINKS = TermLinks(ALIGNED, HEADS)


def test_a_term_replaces_the_noun_its_source_word_went_to_and_keeps_punctuation():
    """bike's most attending word is the article; the run of words linked to bike goes on to
    the noun, which the term replaces."""
    text, shown = place_terms(FREE, LINKS, [TermMatch(4, 4, "Drahtesel")], ALIGNED)
    assert text == "Ein Mann fährt ein Drahtesel, während zwei Hunde rennen."
    assert shown == ALIGNED  # one word for one word


def test_a_term_of_several_words_replaces_the_span_and_the_alignment_follows():
    text, shown = place_terms(FREE, LINKS, [TermMatch(4, 4, "Der Alte Drahtesel")], ALIGNED)
    assert text == "Ein Mann fährt Der Alte Drahtesel, während zwei Hunde rennen."
    assert shown == [(0, 0), (1, 1), (2, 2), (4, 3), (4, 4), (5, 6), (6, 7), (7, 8), (8, 9)]


def test_several_terms_each_in_its_place():
    matches = [TermMatch(1, 1, "Kerl"), TermMatch(7, 7, "Köter")]
    assert place_terms(FREE, LINKS, matches)[0] == \
        "Ein Kerl fährt ein Fahrrad, während zwei Köter rennen."


def test_a_term_already_there_is_left_alone():
    assert place_terms(FREE, LINKS, [TermMatch(4, 4, "Fahrrad")], ALIGNED) == (FREE, ALIGNED)


@pytest.mark.parametrize("links, matches", [
    (TermLinks([(0, 0)], [(0, 0)]), [TermMatch(4, 4, "Drahtesel")]),  # nothing links bike
    (TermLinks(ALIGNED + [(1, 4)], [(1, 4), (4, 4)]),
     [TermMatch(1, 1, "Kerl"), TermMatch(4, 4, "Drahtesel")]),  # one word, two terms
])
def test_a_term_that_cannot_be_placed_says_so(links, matches):
    assert place_terms(FREE, links, matches) is None


def test_either_direction_alone_places_a_term():
    free = "Eine Frau sitzt."
    assert place_terms(free, TermLinks([(0, 0), (2, 2)], [(1, 1)]),
                       [TermMatch(1, 1, "Dame")])[0] == "Eine Dame sitzt."
    assert place_terms(free, TermLinks([(1, 0), (1, 1), (2, 2)], []),
                       [TermMatch(1, 1, "Dame")])[0] == "Eine Dame sitzt."


def test_matches_name_the_whitespace_words_of_the_source_term():
    terms = Glossary.from_pairs({"bike": "Drahtesel", "ice cream": "Eis", "mail": "Post"})
    assert terms.matches("A bike, ice  cream and e-mail.") == [
        TermMatch(1, 1, "Drahtesel"), TermMatch(2, 3, "Eis"), TermMatch(5, 5, "Post")]


def test_a_term_as_written_wins_over_its_other_case():
    terms = Glossary.from_pairs({"dog": "Hund", "Dog": "Dogge"})
    assert terms.constraints_for("Dog and dog.") == ["Dogge", "Hund"]


def test_placing_keeps_the_sentence_capital_and_refuses_what_it_cannot_do_cleanly():
    links = TermLinks([(0, 0), (1, 1)], [(0, 0), (1, 1)])
    assert place_terms("Hunde bellen.", links, [TermMatch(0, 0, "köter")])[0] == "Köter bellen."
    assert place_terms("Köter bellen.", links, [TermMatch(0, 0, "köter")])[0] == "Köter bellen."
    assert place_terms("— bellen.", links, [TermMatch(0, 0, "Köter")]) is None  # punctuation only
    scattered = TermLinks([(0, 0), (0, 4)], [(0, 0)])  # a stray link four words away
    assert place_terms("a b c d e", scattered, [TermMatch(0, 0, "x y")]) is None
