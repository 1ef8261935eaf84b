"""`tinytrans corpus check`: statistics and problems of a parallel corpus, before training on it.

Lengths here are whitespace words, so a corpus can be checked before any tokenizer exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinytrans.textio import LineCounter, ParallelCounter, read_parallel


@dataclass
class CorpusReport:
    src_name: str
    tgt_name: str
    pairs: int = 0
    src_lengths: list[int] = field(default_factory=list)
    tgt_lengths: list[int] = field(default_factory=list)
    src_empty: int = 0
    tgt_empty: int = 0
    both_empty: int = 0
    duplicates: int = 0
    src_invalid: int = 0
    tgt_invalid: int = 0
    too_long: int = 0
    ratio_outliers: int = 0

    @property
    def trainable(self) -> int:
        """Pairs that survive training's filters (non-empty, not too long, sane ratio)."""
        return self.pairs - self.src_empty - self.tgt_empty + self.both_empty - self.too_long - self.ratio_outliers

    def rows(self) -> list[tuple[str, str, str]]:
        src, tgt = np.array(self.src_lengths or [0]), np.array(self.tgt_lengths or [0])
        rows = [("pairs", f"{self.pairs:,}", f"{self.pairs:,}"),
                ("words", f"{int(src.sum()):,}", f"{int(tgt.sum()):,}")]
        for p in (50, 90, 99, 100):
            rows.append((f"length p{p} (words)", f"{np.percentile(src, p):.0f}", f"{np.percentile(tgt, p):.0f}"))
        rows += [
            ("empty lines", str(self.src_empty), str(self.tgt_empty)),
            ("invalid UTF-8 lines", str(self.src_invalid), str(self.tgt_invalid)),
            ("duplicate pairs", str(self.duplicates), ""),
            ("pairs over max length", str(self.too_long), ""),
            ("length-ratio outliers", str(self.ratio_outliers), ""),
            ("trainable pairs", f"{self.trainable:,}", ""),
        ]
        return rows

    def problems(self) -> list[str]:
        """Reasons this corpus cannot be trained on (empty list: it can)."""
        found = []
        if self.pairs == 0:
            found.append("the corpus has no lines")
        elif self.trainable == 0:
            found.append("no pair survives the training filters (empty, too long or extreme ratio)")
        if self.src_invalid or self.tgt_invalid:
            found.append(f"invalid UTF-8 in {self.src_invalid} {self.src_name} and {self.tgt_invalid} "
                         f"{self.tgt_name} lines (train with --utf8-errors replace, or fix the files)")
        return found


def check_corpus(prefix: str, src: str, tgt: str, max_length: int = 128, max_ratio: float = 3.0,
                 utf8: str = "replace") -> CorpusReport:
    """Read the whole corpus once and collect its statistics."""
    counter = ParallelCounter(LineCounter(), LineCounter())
    report = CorpusReport(src, tgt)
    seen: set[int] = set()
    for src_line, tgt_line in read_parallel(prefix, src, tgt, utf8, counter):
        report.pairs += 1
        s, t = len(src_line.split()), len(tgt_line.split())
        report.src_lengths.append(s)
        report.tgt_lengths.append(t)
        report.src_empty += s == 0
        report.tgt_empty += t == 0
        report.both_empty += s == 0 and t == 0
        key = hash((src_line, tgt_line))
        report.duplicates += key in seen
        seen.add(key)
        if s and t:
            report.too_long += max(s, t) > max_length
            report.ratio_outliers += max(s, t) <= max_length and max(s, t) > 5 and max(s, t) > max_ratio * min(s, t)
    report.src_invalid, report.tgt_invalid = counter.src.replaced, counter.tgt.replaced
    return report
