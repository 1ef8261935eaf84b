"""Terminology: constrained decoding on Multi30k test_2016_flickr, against the same search without.

    python bench/constraints_quality.py [RUN_DIR]    # default: bench/work/quality-multi30k

The constraints are taken from the reference, as a user with a glossary would know them: for
each sentence, up to two reference words (4 letters or more) that the unconstrained beam-5
translation does not contain, chosen with a fixed seed; sentences whose translation already has
every reference word get none. Reports BLEU (sacrebleu, with its signature), the constraint hit
rate (a phrase counted where it occurs as a whole word, and where it occurs at all: the search
puts its pieces in, and the model may go on with the same word, 'Hund' -> 'Hunde'), and the time of both
searches: the same model, beam 5, the same 1,000 sentences, one process, run one after the other.
Also the time with an empty constraint list for every line, which must equal the plain search.
"""

from __future__ import annotations

import random
import re
import sys
import time
from pathlib import Path

import sacrebleu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, multi30k_test_set, record  # noqa: E402

from tinytrans.config import SearchConfig  # noqa: E402
from tinytrans.translate import Translator  # noqa: E402

MIN_LETTERS = 4
PER_SENTENCE = 2


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def missed_words(hypothesis: str, reference: str, chooser: random.Random) -> list[str]:
    """Up to PER_SENTENCE reference words the hypothesis lacks."""
    missing = sorted({w for w in words(reference)
                      if len(w) >= MIN_LETTERS and not has_word(hypothesis, w)})
    return chooser.sample(missing, k=min(PER_SENTENCE, len(missing)))


def timed(translator: Translator, source: list[str], cfg: SearchConfig,
          constraints: list[list[str]] | None = None) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = [t.text for t in translator.translate(source, cfg, constraints=constraints)]
    return out, time.perf_counter() - start


def hit_rate(outputs: list[str], constraints: list[list[str]],
             whole_words: bool = True) -> tuple[int, int]:
    """Phrases found as whole words, or (whole_words=False) anywhere, e.g. 'Hund' in 'Hunde'."""
    total = sum(len(c) for c in constraints)
    found = has_word if whole_words else (lambda text, phrase: phrase in text)
    hits = sum(found(o, phrase) for o, c in zip(outputs, constraints) for phrase in c)
    return hits, total


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else WORK / "quality-multi30k"
    source, reference = multi30k_test_set()
    translator = Translator(run_dir, "best", "cpu", "fp32")
    cfg = SearchConfig(beam=5)
    list(translator.translate(source[:50], cfg))  # warm-up
    plain, plain_seconds = timed(translator, source, cfg)
    _, empty_seconds = timed(translator, source, cfg, [[] for _ in source])
    chooser = random.Random(0)
    constraints = [missed_words(h, r, chooser) for h, r in zip(plain, reference)]
    constrained, constrained_seconds = timed(translator, source, cfg, constraints)
    with_some = [i for i, c in enumerate(constraints) if c]
    # the constrained sentences alone, both ways: the cost where constraints apply
    subset = [source[i] for i in with_some]
    _, subset_plain = timed(translator, subset, cfg)
    _, subset_constrained = timed(translator, subset, cfg, [constraints[i] for i in with_some])
    bleu = sacrebleu.BLEU()
    rows = ["| search | BLEU | constraints met as words | ... anywhere | seconds (1,000 sentences) |",
            "|---|---|---|---|---|"]
    for name, out, seconds in (("beam 5", plain, plain_seconds),
                               ("beam 5, every line an empty constraint list", plain, empty_seconds),
                               ("beam 5 + constraints", constrained, constrained_seconds)):
        hits, total = hit_rate(out, constraints)
        anywhere, _ = hit_rate(out, constraints, whole_words=False)
        rows.append(f"| {name} | {bleu.corpus_score(out, [reference]).score:.2f} | "
                    f"{hits}/{total} ({100 * hits / max(total, 1):.1f}%) | "
                    f"{anywhere}/{total} ({100 * anywhere / max(total, 1):.1f}%) | {seconds:.1f} |")
    rows += ["", f"- {len(with_some)} of {len(source)} sentences got constraints "
             f"({sum(map(len, constraints))} phrases: up to {PER_SENTENCE} reference words of "
             f">= {MIN_LETTERS} letters the unconstrained output lacks, seed 0)",
             f"- those {len(with_some)} sentences alone: {subset_plain:.1f} s plain, "
             f"{subset_constrained:.1f} s constrained ({subset_constrained / subset_plain:.2f}x)",
             f"- model: {run_dir} (checkpoint best), fp32, CPU; BLEU signature: "
             f"{bleu.get_signature()}"]
    record("Constrained decoding (terminology), Multi30k test_2016_flickr en-de", rows)


if __name__ == "__main__":
    main()
