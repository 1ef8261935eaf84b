"""`tinytrans corpus check`: statistics and problems of a parallel corpus, before training on it.

Lengths here are whitespace words, so a corpus can be checked before any tokenizer exists. Every
problem is recorded with its line numbers, so that a user can go and look at the lines.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinytrans.config import DataConfig
from tinytrans.data import is_ratio_outlier
from tinytrans.textio import LineCounter, ParallelCounter, read_parallel

# The kinds of problem a line can have, in the order they are reported.
PROBLEM_KINDS = ("src_empty", "tgt_empty", "src_invalid", "tgt_invalid", "duplicates", "too_long",
                 "ratio_outliers")
PERCENTILES = (50, 90, 99, 100)


@dataclass
class CorpusReport:
    src_name: str
    tgt_name: str
    pairs: int = 0
    src_lengths: array = field(default_factory=lambda: array("I"))
    tgt_lengths: array = field(default_factory=lambda: array("I"))
    both_empty: int = 0
    # line numbers (1-based) of each kind of problem; duplicates: lines repeating an earlier pair
    lines: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in PROBLEM_KINDS})

    def count(self, kind: str) -> int:
        return len(self.lines[kind])

    @property
    def invalid_utf8(self) -> int:
        return self.count("src_invalid") + self.count("tgt_invalid")

    @property
    def trainable(self) -> int:
        """Pairs that survive training's filters (non-empty, not too long, sane ratio), once any
        invalid UTF-8 is replaced."""
        empty = self.count("src_empty") + self.count("tgt_empty") - self.both_empty
        return self.pairs - empty - self.count("too_long") - self.count("ratio_outliers")

    @property
    def trainable_as_is(self) -> int:
        """What `tinytrans train` can use with its defaults: invalid UTF-8 stops it."""
        return 0 if self.invalid_utf8 else self.trainable

    def percentiles(self, lengths: array) -> dict[str, int]:
        values = np.frombuffer(lengths, dtype=np.uint32) if len(lengths) else np.zeros(1)
        return {f"p{p}": int(np.percentile(values, p)) for p in PERCENTILES}

    def rows(self) -> list[tuple[str, str, str]]:
        src_p, tgt_p = self.percentiles(self.src_lengths), self.percentiles(self.tgt_lengths)
        rows = [("pairs", f"{self.pairs:,}", f"{self.pairs:,}"),
                ("words", f"{sum(self.src_lengths):,}", f"{sum(self.tgt_lengths):,}")]
        rows += [(f"length {p} (words)", str(src_p[p]), str(tgt_p[p])) for p in src_p]
        rows += [
            ("empty lines", str(self.count("src_empty")), str(self.count("tgt_empty"))),
            ("invalid UTF-8 lines", str(self.count("src_invalid")), str(self.count("tgt_invalid"))),
            ("duplicate pairs", str(self.count("duplicates")), ""),
            ("pairs over max length", str(self.count("too_long")), ""),
            ("length-ratio outliers", str(self.count("ratio_outliers")), ""),
            ("trainable pairs", f"{self.trainable_as_is:,}", ""),
        ]
        if self.invalid_utf8:
            rows.append(("  with --utf8-errors replace", f"{self.trainable:,}", ""))
        return rows

    def problems(self) -> list[str]:
        """Reasons this corpus cannot be trained on as it is (empty list: it can)."""
        found = []
        if self.pairs == 0:
            found.append("the corpus has no lines")
        elif self.trainable == 0:
            found.append("no pair survives the training filters (empty, too long or extreme ratio)")
        if self.invalid_utf8:
            found.append(f"invalid UTF-8 in {self.count('src_invalid')} {self.src_name} and "
                         f"{self.count('tgt_invalid')} {self.tgt_name} lines (train with "
                         "--utf8-errors replace, or fix the files)")
        return found

    def where(self, shown: int = 5) -> list[str]:
        """One line per kind of problem found: what it is and its first `shown` line numbers."""
        out = []
        for kind in PROBLEM_KINDS:
            numbers = self.lines[kind]
            if numbers:
                listed = ", ".join(map(str, numbers[:shown]))
                more = f" and {len(numbers) - shown:,} more" if len(numbers) > shown else ""
                out.append(f"{self.describe(kind)}: line {listed}{more}")
        return out

    def describe(self, kind: str) -> str:
        side = {"src": self.src_name, "tgt": self.tgt_name}.get(kind.split("_")[0], "")
        return {"src_empty": f"empty {side}", "tgt_empty": f"empty {side}",
                "src_invalid": f"invalid UTF-8 in {side}", "tgt_invalid": f"invalid UTF-8 in {side}",
                "duplicates": "duplicate pair", "too_long": "pair over max length",
                "ratio_outliers": "length-ratio outlier"}[kind]

    def to_json(self, prefix: str) -> dict[str, Any]:
        return {
            "corpus": prefix, "src": self.src_name, "tgt": self.tgt_name, "pairs": self.pairs,
            "words": {"src": sum(self.src_lengths), "tgt": sum(self.tgt_lengths)},
            "length_percentiles": {"src": self.percentiles(self.src_lengths),
                                   "tgt": self.percentiles(self.tgt_lengths)},
            "counts": {kind: self.count(kind) for kind in PROBLEM_KINDS},
            "lines": self.lines,
            "trainable_pairs": self.trainable_as_is,
            "trainable_pairs_with_utf8_replace": self.trainable,
            "verdict": "not trainable as is" if self.problems() else "trainable",
            "problems": self.problems(),
        }


def check_corpus(prefix: str, src: str, tgt: str, max_length: int = DataConfig.max_length,
                 max_ratio: float = DataConfig.max_ratio, utf8: str = "replace") -> CorpusReport:
    """Read the whole corpus once and collect its statistics and problem lines."""
    counter = ParallelCounter(LineCounter(), LineCounter())
    report = CorpusReport(src, tgt)
    seen: set[int] = set()
    lines = report.lines
    for number, (src_line, tgt_line) in enumerate(read_parallel(prefix, src, tgt, utf8, counter), 1):
        report.pairs += 1
        s, t = len(src_line.split()), len(tgt_line.split())
        report.src_lengths.append(s)
        report.tgt_lengths.append(t)
        _note(lines["src_empty"], s == 0, number)
        _note(lines["tgt_empty"], t == 0, number)
        report.both_empty += s == 0 and t == 0
        _note(lines["src_invalid"], counter.src.replaced > len(lines["src_invalid"]), number)
        _note(lines["tgt_invalid"], counter.tgt.replaced > len(lines["tgt_invalid"]), number)
        key = hash((src_line, tgt_line))
        _note(lines["duplicates"], key in seen, number)
        seen.add(key)
        if s and t:
            too_long = max(s, t) > max_length
            _note(lines["too_long"], too_long, number)
            _note(lines["ratio_outliers"], not too_long and is_ratio_outlier(s, t, max_ratio), number)
    return report


def _note(numbers: list[int], condition: bool, number: int) -> None:
    if condition:
        numbers.append(number)
