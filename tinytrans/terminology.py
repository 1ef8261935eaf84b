"""Terminology as text: the phrases each line's translation must contain, from a file of
constraints or a glossary, and glossary terms put in place in a translation; and the prefix
each line's translation must begin with.

    --constraints FILE   one line per input line: that line's target phrases, tab-separated
                         (an empty line: none); constraints.py makes the search honour them
    --prefix FILE        one line per input line: the words its translation begins with (an
                         empty line: none); search_loop.py forces them, the search goes on
    --glossary FILE.tsv  `source term<TAB>target term` per line: where a source term occurs in
                         an input line, its translation holds the target term, in the place
                         its source term was translated (place_terms); or, with
                         --glossary-method constrain, as one of that line's phrases

A glossary term matches as whole words (not "cat" in "category"), case-sensitively except for
its first letter (so "dog" also matches a sentence-initial "Dog"), any whitespace where the term
has a space; where terms overlap ("ice" and "ice cream"), the longest wins.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tinytrans.errors import UserError
from tinytrans.textio import open_binary

MAX_PHRASES = 50  # per line: more is a misuse (each one widens the search)
MAX_PHRASE_CHARS = 500
MAX_PREFIX_CHARS = 2000


def read_prefixes(path: Path) -> Iterator[str]:
    """The prefix of each line of a prefix file, lazily (it pairs with a stream)."""
    for where, text in numbered_lines(path):
        yield check_prefix(text, where)


def check_prefix(text: str, where: str) -> str:
    """A prefix with its whitespace made single spaces, one kept at the end if it ended with
    any (its last word is finished); a prefix is one line, of bounded length."""
    if not isinstance(text, str):
        raise UserError(f"{where}: {text!r} is not a prefix (a str)")
    finished = text[-1:].isspace()
    text = " ".join(text.split())
    text += " " if text and finished else ""
    if len(text) > MAX_PREFIX_CHARS:
        raise UserError(f"{where}: a prefix of {len(text):,} characters; at most "
                        f"{MAX_PREFIX_CHARS:,}")
    return text


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
    """The phrases of `--constraints PATH`, one list per input line."""
    return paired_with_input(path, input, "--constraints", read_constraints)


def prefixes_for(path: Path, input: Path | None) -> Iterable[str]:
    """The prefixes of `--prefix PATH`, one per input line."""
    return paired_with_input(path, input, "--prefix", read_prefixes)


def paired_with_input(path: Path, input: Path | None, flag: str,
                      read: Callable[[Path], Iterator]) -> Iterable:
    """A file with one line per input line, read by `read`. A file is read and checked whole
    before any work (it is small), and must have as many lines as an --input file; a pipe can
    only be read as it streams, beside the input (the translator checks the pairing)."""
    if not path.is_file():
        return read(path)
    items = list(read(path))
    if input is not None and input.is_file() and count_lines(input) != len(items):
        raise UserError(f"{flag} {path}: {len(items)} lines, but --input {input} has "
                        f"{count_lines(input)}; give one line (maybe empty) per input line")
    return items


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


_TOKEN = re.compile(r"\w+|[^\w\s]")  # a run of word characters, or one other visible character
_END = ""  # the key under which a trie node keeps the source term that ends there


@dataclass(frozen=True)
class Glossary:
    """Source terms and the target term each must become.

    The source terms are kept in a trie over tokens (runs of word characters, or single other
    characters), so that finding them in a line costs the line's length times the longest term,
    whatever the glossary's size (a regex with an alternative per term grew with the square of
    the glossary: 8,000 terms took 16.7 s on 100 lines). A node's children are keyed by (token,
    whether whitespace comes before it); the root's by the first token, once per form of its
    first letter (lower and upper case)."""

    terms: dict[str, str]
    trie: dict

    @classmethod
    def from_pairs(cls, pairs: dict[str, str]) -> Glossary:
        trie: dict = {}
        for source in pairs:
            tokens = _tokens(source)
            if not tokens:
                continue
            (first, _), *rest = tokens
            for form in _first_letter_forms(first[0]):
                node = trie.setdefault(form + first[1:], {})
                for key in rest:
                    node = node.setdefault(key, {})
                if form == first[0]:
                    node[_END] = source  # as written: "Dog" is "Dog"'s, though "dog" came first
                else:
                    node.setdefault(_END, source)
        return cls(dict(pairs), trie)

    def constraints_for(self, line: str) -> list[str]:
        """The target terms of the source terms found in `line`, in order of appearance, each
        once."""
        found: list[str] = []
        for match in self.matches(line):
            if match.target not in found:
                found.append(match.target)
        return found

    def matches(self, line: str) -> list[TermMatch]:
        """Every source term found in `line`, in order: at each token from the left, the longest
        term that begins there (as whole words), then on after it. Each match names the
        whitespace words of `line` it covers."""
        if not self.trie:
            return []
        spans = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(line)]
        word_ends = [m.end() for m in re.finditer(r"\S+", line)]
        found: list[TermMatch] = []
        i = 0
        while i < len(spans):
            last, source = self._longest_at(line, spans, i)
            if source is not None:
                found.append(TermMatch(bisect.bisect_right(word_ends, spans[i][1]),
                                       bisect.bisect_left(word_ends, spans[last][2]),
                                       self.terms[source]))
            i = last + 1
        return found

    def _longest_at(self, line: str, spans: list[tuple[str, int, int]],
                    i: int) -> tuple[int, str | None]:
        """(index of its last token, source term) of the longest term starting at token i, or
        (i, None)."""
        token, start, _ = spans[i]
        node = self.trie.get(token)
        if node is None or (start > 0 and _is_word(line[start - 1])):  # "-x" inside "a-x"
            return i, None
        best: tuple[int, str | None] = (i, None)
        j = i
        while True:
            end = spans[j][2]
            if _END in node and not (end < len(line) and _is_word(line[end])):
                best = (j, node[_END])
            j += 1
            if j == len(spans):
                return best
            node = node.get((spans[j][0], spans[j][1] > spans[j - 1][2]))
            if node is None:
                return best


def _tokens(text: str) -> list[tuple[str, bool]]:
    """(token, whether whitespace comes before it) for each token of `text`."""
    result, previous_end = [], None
    for match in _TOKEN.finditer(text):
        result.append((match.group(), previous_end is not None and match.start() > previous_end))
        previous_end = match.end()
    return result


def _is_word(char: str) -> bool:
    """Whether `char` is a word character, as `\\w` says."""
    return re.match(r"\w", char) is not None


def _first_letter_forms(char: str) -> set[str]:
    """The characters a term's first letter matches: itself, and its lower and upper case
    (each character of them: "İ".lower() is "i" and a combining dot)."""
    return {char, *char.lower(), *char.upper()}


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


# ---------------------------------------------------------------------------------------------
# Placing terms by alignment

@dataclass(frozen=True)
class TermMatch:
    """A glossary term found in a line: the whitespace words its source term covers."""

    first_word: int
    last_word: int
    target: str


# Word alignments, as every module passes them: (source word, target word) pairs, by target word
Alignment = list[tuple[int, int]]


@dataclass(frozen=True)
class TermLinks:
    """Where a translation's words came from, both ways, as place_terms reads them."""

    to_source: Alignment  # each target word's source word (alignment.links_both_ways)
    to_target: Alignment  # each source word's most attending target word (the same, other way)


def place_terms(text: str, links: TermLinks, matches: list[TermMatch],
                shown: Alignment = ()) -> tuple[str, Alignment] | None:
    """`text` (a translation) with each term put where its source term was translated: the
    target words aligned to the source term's words give way to the term, the rest of the
    translation stays as the model wrote it. A term the text already holds is left alone.

    A one-word term replaces one word: from the one `links.to_target` names for the source
    term's last word (its head, in English: "ice cream"), else the first `links.to_source` links
    to the term, on to the last of the run of words `links.to_source` links to it ("Ein kleines
    Mädchen" <- "girl": the noun, not its article, which the step choosing the article attends
    to most). A several-word term replaces the span of the words either links. Leading and
    trailing punctuation of the replaced words stays ("Fahrrad," -> "Drahtesel,"). `shown` (the
    alignment the user sees) comes back with its target indices moved to the new words.

    None where a term cannot be placed (nothing links its source words, or two terms would take
    the same words): the caller then makes the search include it instead.
    """
    words = text.split()
    spans: list[tuple[int, int, str]] = []
    for match in matches:
        if _holds(words, match.target):
            continue
        aligned = _aligned(links.to_source, match, len(words))
        head = [t for s, t in links.to_target if s == match.last_word and t < len(words)]
        if not aligned and not head:
            return None
        if len(match.target.split()) == 1:
            word = head[0] if head else aligned[0]
            while word + 1 in aligned:  # on to the last of the run: the noun after its article
                word += 1
            span = (word, word)
        else:
            linked = sorted(set(aligned) | set(_aligned(links.to_target, match, len(words))))
            span = (linked[0], linked[-1])
            if span[1] - span[0] >= len(linked) + 1:  # a stray link would take words between
                return None
        if not _core(words[span[0]])[1] or any(a <= span[1] and span[0] <= b for a, b, _ in spans):
            return None  # a word of punctuation only, or words another term takes
        spans.append((*span, match.target))
    shown = list(shown)
    for first, last, target in sorted(spans, reverse=True):  # from the right: indices stay valid
        shown = _moved(shown, first, last, len(target.split()))
        lead, replaced, _ = _core(words[first])
        if first == 0 and replaced[:1].isupper():  # the sentence's first word keeps its capital
            target = target[:1].upper() + target[1:]
        words[first:last + 1] = (lead + target + _core(words[last])[2]).split()
    return " ".join(words), shown


def _aligned(alignment: Alignment, match: TermMatch, n_words: int) -> list[int]:
    """The target words the alignment links to the match's source words, in order."""
    return sorted({t for s, t in alignment if match.first_word <= s <= match.last_word
                   and t < n_words})


def _holds(words: list[str], term: str) -> bool:
    """Whether the words hold `term` as whole words (punctuation around them aside; its first
    letter in either case, as a sentence may begin with it)."""
    wanted = [w.lower() for w in term.split()[:1]] + term.split()[1:]
    cores = [_core(w)[1] for w in words]
    return any([cores[i].lower(), *cores[i + 1:i + len(wanted)]] == wanted
               for i in range(len(cores) - len(wanted) + 1))


def _core(word: str) -> tuple[str, str, str]:
    """(leading punctuation, the word, trailing punctuation): '"Rad,' -> ('"', 'Rad', ',')."""
    start = next((i for i, c in enumerate(word) if c.isalnum()), len(word))
    end = next((i for i in range(len(word), start, -1) if word[i - 1].isalnum()), start)
    return word[:start], word[start:end], word[end:]


def _moved(alignment: Alignment, first: int, last: int, new: int) -> Alignment:
    """Target indices after words first..last become `new` words."""
    shift = new - (last - first + 1)
    return [(s, t if t < first else first + min(t - first, new - 1) if t <= last else t + shift)
            for s, t in alignment]
