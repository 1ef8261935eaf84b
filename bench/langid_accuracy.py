"""How well tinytrans.langid tells Multi30k's four languages apart.

    python bench/langid_accuracy.py

Trained on the first N lines of Multi30k's train.{en,de,fr,cs} (N = 1,000, 3,000 and 10,000; a
run trains it on 3,000 lines of each of its languages), tested on every sentence of
test_2016_flickr in all four languages (4,000 lines), then on the first 1, 2 and 3 words of each
(short inputs, the hard case). Reported: accuracy, the share of wrong answers given with a
confidence above 90%, seconds to train and lines identified per second.
"""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, require_multi30k  # noqa: E402

from tinytrans.langid import LanguageIdentifier  # noqa: E402

LANGUAGES = ("en", "de", "fr", "cs")


def lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def main() -> None:
    corpus = require_multi30k()
    train = {lang: lines(corpus / f"train.{lang}.gz") for lang in LANGUAGES}
    test = [(lang, line) for lang in LANGUAGES for line in lines(corpus / f"test_2016_flickr.{lang}.gz")]
    rows = ["| trained on, lines per language | input | accuracy | wrong with confidence > 90% "
            "| train s | lines/s |", "|---|---|---|---|---|---|"]
    for n in (1000, 3000, 10000):
        start = time.perf_counter()
        identifier = LanguageIdentifier.train({lang: train[lang][:n] for lang in LANGUAGES})
        seconds = time.perf_counter() - start
        for words in (None, 1, 2, 3):
            cases = [(lang, line if words is None else " ".join(line.split()[:words]))
                     for lang, line in test]
            start = time.perf_counter()
            guesses = [identifier.identify(text) for _, text in cases]
            rate = len(cases) / (time.perf_counter() - start)
            right = sum(g.language == lang for g, (lang, _) in zip(guesses, cases))
            sure_wrong = sum(g.language != lang and g.confidence > 90
                             for g, (lang, _) in zip(guesses, cases))
            label = "whole sentence" if words is None else f"first {words} word{'s' * (words > 1)}"
            rows.append(f"| {n:,} | {label} | {right / len(cases):.2%} | "
                        f"{sure_wrong / len(cases):.2%} | {seconds:.1f} | {rate:,.0f} |")
    rows += ["", "- test: test_2016_flickr, 1,000 sentences in each of en, de, fr, cs; train: the "
             "first N lines of train.LANG; n-grams of 1-4 characters, 4,000 kept per language"]
    record("Language identification: Multi30k's four languages", rows)


if __name__ == "__main__":
    main()
