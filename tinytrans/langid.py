"""Which language a line is in: an identifier for the languages a run serves, trained on its data.

A naive Bayes classifier over character n-grams, the method behind the classic identifiers
(Cavnar & Trenkle 1994 ranked n-gram profiles; langid.py, Lui & Baldwin 2012, is naive Bayes
over byte n-grams): each language's n-grams of 1 to 4 characters are counted in sample text,
and the `keep` most frequent of each language are kept with their log-probabilities. A line
scores, for each language, the sum of log P(n-gram | language) over its n-grams, an n-gram the
language never kept getting that language's floor (the probability its smoothing leaves for one
unseen n-gram). The best score wins; the confidence is the posterior of the scores, the
softmax, as a percentage (naive Bayes is sure of itself: most lines get 100.0).

Why not a library: py3langid and lingua ship general models of dozens of languages; this one
knows only the run's languages and its domain, from the run's own training text, and adds no
dependency. Measured in bench/langid_accuracy.py.

Saved as JSON (never pickled: a run directory is untrusted input) and checked when read.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tinytrans.atomic import atomic_write_text
from tinytrans.errors import UserError

LANGID_FILE = "langid.json"  # in a run directory, and in an export of it
SAMPLE_LINES = 3000  # lines of each language a run trains its identifier on
FORMAT = 1
ORDERS = (1, 2, 3, 4)  # n-gram lengths, in characters
DEFAULT_KEEP = 4000  # n-grams kept per language
MAX_KEEP = 100_000
MAX_LANGUAGES = 200
MAX_FILE_BYTES = 64_000_000
LOWEST_LOG_PROB = -1e4  # a saved log-probability below this is damage (no sum may reach -inf)
LANGUAGE_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_DIGITS = re.compile(r"\d")


def ngrams(line: str) -> list[str]:
    """The character n-grams of a line: its words joined by single spaces, a space before and
    after (so that word starts and ends count), every digit made 0 (numbers say nothing of a
    language)."""
    text = " " + _DIGITS.sub("0", " ".join(line.split())) + " "
    return [text[i: i + n] for n in ORDERS for i in range(len(text) - n + 1)]


@dataclass(frozen=True)
class Guess:
    language: str
    confidence: float  # percent, 0 to 100


@dataclass(frozen=True)
class LanguageIdentifier:
    """Per language, its kept n-grams' log-probabilities and the floor of the others."""

    log_probs: dict[str, dict[str, float]]
    floors: dict[str, float]

    @property
    def languages(self) -> list[str]:
        return list(self.log_probs)

    @classmethod
    def train(cls, samples: dict[str, Iterable[str]], keep: int = DEFAULT_KEEP) -> LanguageIdentifier:
        """From sample lines of each language (a few thousand lines each are plenty)."""
        if not samples:
            raise UserError("language identifier: no languages to learn")
        log_probs, floors = {}, {}
        for language, lines in samples.items():
            counts = Counter(gram for line in lines for gram in ngrams(line))
            if not counts:
                raise UserError(f"language identifier: no text in '{language}'")
            # add-one smoothing over the kept n-grams and one more class: every unseen n-gram
            total = sum(counts.values())
            kept = counts.most_common(keep)
            denominator = total + len(kept) + 1
            log_probs[language] = {g: math.log((c + 1) / denominator) for g, c in kept}
            floors[language] = math.log(1 / denominator)
        return cls(log_probs, floors)

    def scores(self, line: str) -> dict[str, float]:
        """The log-likelihood of the line's n-grams under each language."""
        grams = ngrams(line)
        return {language: sum(table.get(g, self.floors[language]) for g in grams)
                for language, table in self.log_probs.items()}

    def identify(self, line: str, among: Iterable[str] | None = None) -> Guess:
        """The most likely language of a line, with its posterior in percent; `among`: only
        these of the identifier's languages. A line with no text gets the first language and a
        confidence of 0."""
        candidates = [lang for lang in self.languages if among is None or lang in set(among)]
        if not line.strip() or not candidates:
            return Guess((candidates or self.languages)[0], 0.0)
        scores = {lang: score for lang, score in self.scores(line).items() if lang in candidates}
        best = max(scores, key=scores.get)
        total = sum(math.exp(s - scores[best]) for s in scores.values())
        return Guess(best, round(100.0 / total, 1))

    def save(self, path: Path) -> None:
        data = {"format": FORMAT, "orders": list(ORDERS),
                "languages": {lang: {"floor": self.floors[lang], "log_probs": table}
                              for lang, table in self.log_probs.items()}}
        atomic_write_text(path, json.dumps(data, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> LanguageIdentifier:
        """Read a saved identifier, every field checked (a damaged file is one line)."""
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise UserError(f"{path}: over {MAX_FILE_BYTES:,} bytes; not a language identifier")
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise missing_identifier(str(path)) from None
        except (OSError, ValueError, RecursionError) as error:
            raise UserError(f"{path}: unreadable ({type(error).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT \
                or data.get("orders") != list(ORDERS):
            raise UserError(f"{path}: not a language identifier of format {FORMAT}")
        languages = data.get("languages")
        if not isinstance(languages, dict) or not 0 < len(languages) <= MAX_LANGUAGES:
            raise UserError(f"{path}: 'languages' must name 1 to {MAX_LANGUAGES} languages")
        log_probs, floors = {}, {}
        for language, entry in languages.items():
            if not LANGUAGE_CODE.fullmatch(language):
                raise UserError(f"{path}: {language!a} is not a language code")
            table = entry.get("log_probs") if isinstance(entry, dict) else None
            floor = entry.get("floor") if isinstance(entry, dict) else None
            if not isinstance(table, dict) or len(table) > MAX_KEEP or not _log_prob(floor) \
                    or not all(isinstance(g, str) and _log_prob(v) for g, v in table.items()):
                raise UserError(f"{path}: the entry of '{language}' is damaged")
            log_probs[language], floors[language] = table, float(floor)
        return cls(log_probs, floors)


def missing_identifier(where: str) -> UserError:
    """The error for a model without an identifier: one made before runs trained one."""
    return UserError(f"{where}: this model has no language identifier (runs trained since it "
                     "was added have one; train the run again for one)")


def identifier_in(directory: Path) -> LanguageIdentifier | None:
    """The identifier a run (or its export) keeps, or None for one made before identifiers."""
    path = Path(directory) / LANGID_FILE
    return LanguageIdentifier.load(path) if path.exists() else None


def evenly_spaced(count: int, wanted: int = SAMPLE_LINES) -> list[int]:
    """Indices of `wanted` lines (or all `count`, if fewer) spread evenly over `count`, without
    random numbers: a run's training draws stay as they were."""
    if count <= wanted:
        return list(range(count))
    return [i * count // wanted for i in range(wanted)]


def _log_prob(value: object) -> bool:
    return type(value) in (int, float) and LOWEST_LOG_PROB <= value <= 0
