"""Terminology as text: the phrases each line's translation must contain, from a file of
constraints or a glossary. constraints.py makes the search honour them.

    --constraints FILE   one line per input line: that line's target phrases, tab-separated
                         (an empty line: none)
    --glossary FILE.tsv  `source term<TAB>target term` per line: where a source term occurs in
                         an input line, its target term becomes one of that line's phrases

A glossary term matches as whole words (not "cat" in "category"), case-sensitively except for
its first letter (so "dog" also matches a sentence-initial "Dog"); where terms overlap ("ice" and
"ice cream"), the longest wins. A target term is a constraint once per line however often its
source term occurs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tinytrans.errors import UserError
from tinytrans.textio import open_binary

MAX_PHRASES = 50  # per line: more is a misuse (each one widens the search)
MAX_PHRASE_CHARS = 500


def read_constraints(path: Path) -> Iterator[list[str]]:
    """The phrases of each line of a constraints file, lazily (it pairs with a stream)."""
    for where, text in numbered_lines(path):
        yield check_phrases([p for p in text.split("\t") if p.strip()], where)


def numbered_lines(path: Path) -> Iterator[tuple[str, str]]:
    """(`FILE:LINE`, the line's text without its end) for each line of a UTF-8 file."""
    with open_binary(path) as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                yield f"{path}:{number}", raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise UserError(f"{path}:{number}: not valid UTF-8") from None


def constraints_for(path: Path, input: Path | None) -> Iterable[list[str]]:
    """The phrases of `--constraints PATH`, one list per input line. A file is read and checked
    whole before any work (it is small), and must have as many lines as an --input file; a pipe
    can only be read as it streams, beside the input (the translator checks the pairing)."""
    if not path.is_file():
        return read_constraints(path)
    phrases = list(read_constraints(path))
    if input is not None and input.is_file() and count_lines(input) != len(phrases):
        raise UserError(f"--constraints {path}: {len(phrases)} lines, but --input {input} has "
                        f"{count_lines(input)}; give one line (maybe empty) per input line")
    return phrases


def count_lines(path: Path) -> int:
    """Lines of a file, as read_constraints and the translator count them."""
    with open_binary(path) as lines:
        return sum(1 for _ in lines)


def check_phrases(phrases: list[str], where: str) -> list[str]:
    """Phrases stripped, each checked: not too many, not too long, one line each."""
    if len(phrases) > MAX_PHRASES:
        raise UserError(f"{where}: {len(phrases)} constraints; at most {MAX_PHRASES} per line")
    result = []
    for phrase in phrases:
        if not isinstance(phrase, str):
            raise UserError(f"{where}: {phrase!r} is not a phrase (a str)")
        phrase = " ".join(phrase.split())
        if not phrase:
            raise UserError(f"{where}: an empty constraint")
        if len(phrase) > MAX_PHRASE_CHARS:
            raise UserError(f"{where}: a constraint of {len(phrase)} characters; at most "
                            f"{MAX_PHRASE_CHARS}")
        result.append(phrase)
    return result


@dataclass(frozen=True)
class Glossary:
    """Source terms and the target term each must become."""

    terms: dict[str, str]
    pattern: re.Pattern | None  # every source term as whole words, longest first; group tN
    order: tuple[str, ...] = ()  # the source term of group tN

    @classmethod
    def from_pairs(cls, pairs: dict[str, str]) -> Glossary:
        if not pairs:
            return cls({}, None)
        # longest first: the regex takes the first alternative that matches at a position
        order = tuple(sorted(pairs, key=len, reverse=True))
        alternatives = [f"(?P<t{i}>{term_pattern(term)})" for i, term in enumerate(order)]
        return cls(dict(pairs), re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)"),
                   order)

    def constraints_for(self, line: str) -> list[str]:
        """The target terms of the source terms found in `line`, in order of appearance."""
        if self.pattern is None:
            return []
        found: list[str] = []
        for match in self.pattern.finditer(line):
            target = self.terms[self.order[int(match.lastgroup[1:])]]
            if target not in found:
                found.append(target)
        return found


def term_pattern(term: str) -> str:
    """A term as a regex: its first letter in either case, the rest as written, spaces flexible."""
    first, rest = term[0], term[1:]
    head = re.escape(first)
    if first.isalpha():
        head = f"[{re.escape(first.lower())}{re.escape(first.upper())}]"
    return head + r"\s+".join(re.escape(word) for word in rest.split(" "))


def read_glossary(path: Path) -> Glossary:
    """A glossary TSV: `source term<TAB>target term` per line; blank lines are skipped."""
    pairs: dict[str, str] = {}
    seen_at: dict[str, str] = {}
    for where, text in numbered_lines(path):
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) != 2:
            raise UserError(f"{where}: expected 'source term<TAB>target term', found "
                            f"{len(fields)} tab-separated fields")
        source, target = (" ".join(f.split()) for f in fields)
        if not source or not target:
            raise UserError(f"{where}: an empty {'source' if not source else 'target'} term")
        check_phrases([target], where)
        if source in pairs and pairs[source] != target:
            raise UserError(f"{where}: '{source}' is already '{pairs[source]}' "
                            f"(line {seen_at[source]}), here '{target}'")
        pairs[source], seen_at[source] = target, where.rsplit(":", 1)[1]
    if not pairs:
        raise UserError(f"{path}: the glossary has no terms")
    return Glossary.from_pairs(pairs)
