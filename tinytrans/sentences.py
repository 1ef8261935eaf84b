"""Sentences: splitting a line into sentences, and joining their translations.

A model trained on single sentences, given a paragraph whole, drops some of it; and it
translates at most `max_length` source pieces, so a longer line would lose its end. The
translator therefore cuts every line into sentences (and, where a sentence is still too long,
into clauses, words or characters), translates the parts like any other lines, and joins the
translations back into one output line, so one line in still gives one line out.

    split_sentences('He said "Stop." Then he left.')   # ['He said "Stop."', 'Then he left.']
    split_to_fit(line, fits=lambda part: len(tokenizer.encode(part)) <= max_length)
    join_translations(["Er sagte „Halt.“", "", "Dann ging er."])  # one line, single spaces

The splitter is rule-based, not learned: a sentence ends after . ! ? … (or a run of them, such as
"?!" or "...") and any closing quotes or brackets, where whitespace and then something that can
start a sentence follow; after 。！？ it ends even without whitespace. A period does not end a
sentence after a known abbreviation, an initial or (in German and Czech) an ordinal number.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import cache

# Abbreviations after which a period does not end a sentence, written as they appear in text.
# "common" applies to every language; language=None applies every list. A capitalised form
# also counts ("Např." at the start of a sentence, "E.g."). The lists are short on purpose:
# each entry also stops a split where the abbreviation really does end a sentence ("... etc. Then").
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "common": ("Dr.", "Prof.", "St.", "etc.", "vs.", "ca."),
    "en": ("Mr.", "Mrs.", "Ms.", "Jr.", "Sr.", "e.g.", "i.e.", "No.", "Inc.", "Ltd.", "Co.",
           "Jan.", "Feb.", "Mar.", "Apr.", "Aug.", "Sep.", "Sept.", "Oct.", "Nov.", "Dec."),
    "de": ("z.B.", "bzw.", "usw.", "Nr.", "d.h.", "u.a.", "Str."),
    "fr": ("M.", "Mme.", "Mlle.", "p.ex."),
    "cs": ("tj.", "např.", "atd."),
}

# These are also words or names ("No. I won't.", "I met Jan. He waved."), and as abbreviations
# they stand before a number ("No. 5", "Jan. 12"), so they hold only where a digit follows.
ONLY_BEFORE_A_NUMBER = frozenset({"No.", "Jan.", "Feb.", "Mar.", "Apr.", "Aug.", "Sep.",
                                  "Sept.", "Oct.", "Nov.", "Dec."})

# Languages that write ordinal numbers as digits and a period ("am 3. Oktober", "5. května").
ORDINAL_LANGUAGES = frozenset({"de", "cs"})

FULL_WIDTH_TERMINATORS = "。！？"  # Chinese and Japanese leave no space after these
CLOSERS = "\"'”’“‘»›)]}」』】）〕〉》"  # may follow a terminator and still belong to the sentence
OPENERS = "\"'“‘„«‹([{¿¡「『【（〔〈《"  # may open the next sentence

# Uppercase letters and letters of scripts without case (Chinese, Arabic, Thai...) can begin
# a sentence; a lowercase letter after a period means the sentence goes on ("approx. ten").
_SENTENCE_START_CATEGORIES = frozenset({"Lu", "Lt", "Lo", "Nd"})

_TERMINATOR = re.compile(
    rf"(?P<marks>[.!?…{FULL_WIDTH_TERMINATORS}]+)"
    rf"(?P<closers>[{re.escape(CLOSERS)}]*)"
    r"(?P<space>\s*)"
)


def split_sentences(text: str, language: str | None = None) -> list[str]:
    """The sentences of `text`, in order, stripped, without the whitespace between them.

    language: an ISO code ("en", "de", "fr", "cs"; "de-AT" counts as "de") choosing which
    abbreviations to respect, or None for all of them. An unknown code gets the common list.
    A text without a sentence boundary is one sentence; an empty or blank text gives [].
    """
    language = _primary_language(language)
    sentences, start = [], 0
    for match in _TERMINATOR.finditer(text):
        if _ends_sentence(text, match, language):
            sentences.append(text[start:match.end("closers")])
            start = match.end()
    sentences.append(text[start:])
    return [sentence.strip() for sentence in sentences if sentence.strip()]


def _primary_language(language: str | None) -> str | None:
    """'de-AT', 'de_AT' and 'DE' -> 'de': abbreviations belong to the language, not the region."""
    if language is None:
        return None
    return language.lower().replace("_", "-").split("-")[0]


def _ends_sentence(text: str, match: re.Match[str], language: str | None) -> bool:
    """Whether the terminator run in `match` ends a sentence."""
    if any(mark in FULL_WIDTH_TERMINATORS for mark in match["marks"]):
        return True
    if not match["space"] or match.end() == len(text):
        return False  # "3.5", "example.com"; at the very end there is nothing to split off
    next_char = text[match.end()]
    if not _can_start_sentence(next_char):
        return False
    if match["marks"] != "." or match["closers"]:
        return True  # "!", "?!", "..." and a closing quote after a period mark a real end
    word = _word_before(text, match.end("marks")).lstrip(OPENERS)
    return not (_is_abbreviation(word, next_char, language) or _is_initials(word)
                or _is_ordinal(word, language))


def _can_start_sentence(char: str) -> bool:
    return char in OPENERS or unicodedata.category(char) in _SENTENCE_START_CATEGORIES


def _word_before(text: str, end: int) -> str:
    """The run of non-whitespace characters ending at `end` (the period included)."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:end]


@cache
def _abbreviations_for(language: str | None) -> frozenset[str]:
    """The abbreviations respected for `language` (None: every list)."""
    if language is None:
        tables = list(ABBREVIATIONS.values())
    else:
        tables = [ABBREVIATIONS["common"], ABBREVIATIONS.get(language, ())]
    return frozenset(entry for table in tables for entry in table)


def _is_abbreviation(word: str, next_char: str, language: str | None) -> bool:
    known = _abbreviations_for(language)
    uncapitalised = word[:1].lower() + word[1:]
    entry = word if word in known else uncapitalised if uncapitalised in known else None
    if entry is None:
        return False
    return next_char.isdigit() if entry in ONLY_BEFORE_A_NUMBER else True


def _is_initials(word: str) -> bool:
    """'J.', 'U.S.': single capital letters, each followed by a period."""
    letters = word.removesuffix(".").split(".")
    return all(len(letter) == 1 and letter.isupper() for letter in letters)


def _is_ordinal(word: str, language: str | None) -> bool:
    """'3.', '12.' in a language that writes ordinals so; three digits are rarely ordinals."""
    return language in ORDINAL_LANGUAGES and re.fullmatch(r"\d{1,2}\.", word) is not None


# Clause punctuation that a too-long sentence may be cut after: comma, semicolon and colon
# before whitespace (not "1,000" or "10:30"), a dash, and their full-width forms.
_CLAUSE_END = re.compile(r"[,;:–]\s+|—\s*|[，、；：]\s*")
_WORD_END = re.compile(r"\s+")


def split_to_fit(text: str, fits: Callable[[str], bool], language: str | None = None) -> list[str]:
    """Pieces of `text`, in order, each of which `fits` (the caller's test, e.g. "encodes to at
    most max_length pieces"), losing no word.

    The rule, gentlest cut first, each step only for a part the step before left too long:
    1. sentences (split_sentences); neighbouring sentences are never merged, even if they fit;
    2. clauses, cut after , ; : and dashes (the punctuation stays on the left), merged again
       into the longest runs of neighbouring clauses that fit;
    3. words, cut at whitespace, merged into the longest runs of neighbouring words that fit;
    4. characters (a base character keeps its combining accents), for a single word that does
       not fit, merged into the longest runs that fit.
    A single character that does not fit is returned alone: nothing smaller exists, so that
    piece is the one exception to "each piece fits". Pieces are stripped and never empty;
    whitespace inside a piece is kept as in `text`. `fits` is only called on such pieces.
    """
    return fit_sentences(split_sentences(text, language), fits)


def fit_sentences(sentences: list[str], fits: Callable[[str], bool]) -> list[str]:
    """split_to_fit's pieces from sentences already split: each kept, or cut until it fits."""
    pieces = []
    for sentence in sentences:
        pieces.extend([sentence] if fits(sentence) else _cut(sentence, fits))
    return pieces


def _clauses(text: str) -> list[str]:
    return _cut_after(_CLAUSE_END, text)


def _words(text: str) -> list[str]:
    return _cut_after(_WORD_END, text)


def _characters(text: str) -> list[str]:
    """The characters of `text`, a combining accent kept with the letter it sits on."""
    units: list[str] = []
    for char in text:
        if units and unicodedata.combining(char):
            units[-1] += char
        else:
            units.append(char)
    return units


# The ways of cutting a part that does not fit, from the gentlest to the last resort.
_CUTS: tuple[Callable[[str], list[str]], ...] = (_clauses, _words, _characters)


def _cut_after(pattern: re.Pattern[str], text: str) -> list[str]:
    """`text` cut after every match of `pattern`: the units join back to exactly `text`."""
    units, start = [], 0
    for match in pattern.finditer(text):
        units.append(text[start:match.end()])
        start = match.end()
    units.append(text[start:])
    return [unit for unit in units if unit]


def _cut(text: str, fits: Callable[[str], bool], depth: int = 0) -> list[str]:
    """Pieces of `text`, which does not fit, cut by _CUTS[depth] and, where a unit is still
    too long, by the cuts after it."""
    last_resort = depth == len(_CUTS) - 1
    pieces = []
    for run, run_fits in _longest_runs(_CUTS[depth](text), fits):
        if run_fits or last_resort:
            pieces.append(run)
        else:
            pieces.extend(_cut(run, fits, depth + 1))
    return pieces


def _longest_runs(units: list[str], fits: Callable[[str], bool]) -> list[tuple[str, bool]]:
    """Neighbouring units merged greedily into the longest stripped runs that fit, each with
    whether it fits: a unit too long on its own comes back alone, marked False."""
    runs: list[tuple[str, bool]] = []
    run = ""
    for unit in units:
        if fits((run + unit).strip()):
            run += unit
            continue
        if run:
            runs.append((run.strip(), True))
            run = ""
            if fits(unit.strip()):
                run = unit
                continue
        runs.append((unit.strip(), False))
    if run:
        runs.append((run.strip(), True))
    return runs


# The characters str.splitlines() breaks a line at, and tab: none may reach the one output line.
_LINE_BREAKS_AND_TABS = re.compile(r"\s*[\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]\s*")


def join_translations(parts: list[str]) -> str:
    """The translations of one line's parts as one line: stripped parts joined by single spaces,
    empty parts skipped, each line break or tab (with the spaces around it) made one space.

    Other whitespace inside a part is kept: a no-break space before "?" is French typography.
    """
    one_line = (_LINE_BREAKS_AND_TABS.sub(" ", part).strip() for part in parts)
    return " ".join(part for part in one_line if part)
