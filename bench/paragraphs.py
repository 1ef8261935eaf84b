"""Paragraphs: Multi30k's test set joined 3 and 10 captions per line, translated sentence by
sentence (the default) and whole (`--no-split-sentences`), with one model in one process.

    python bench/paragraphs.py [RUN_DIR]    # default: bench/work/quality-multi30k

Both ways translate the same lines with the same model and search (beam 5, fp32, CPU); each row
is the faster of two runs. BLEU is of the joined lines against the joined references, and the
row "1 per line" is the captions one by one, joined after: what splitting can at best reach.
"Length ratio" is the output's words over the reference's: a model given a paragraph whole drops
sentences, and that shows as a ratio well below 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import sacrebleu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, best_of_two, multi30k_test_set, record  # noqa: E402

from tinytrans.config import SearchConfig  # noqa: E402
from tinytrans.lines import LineOptions  # noqa: E402
from tinytrans.translate import Translator  # noqa: E402

SEARCH = SearchConfig(beam=5)


def joined(lines: list[str], k: int) -> list[str]:
    return [" ".join(lines[i:i + k]) for i in range(0, len(lines), k)]


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else WORK / "quality-multi30k"
    source, reference = multi30k_test_set()
    translator = Translator(run_dir, "best", "cpu", "fp32")
    list(translator.translate(source[:50], SEARCH))  # warm-up
    bleu = sacrebleu.BLEU()
    rows = ["| captions per line | sentences | seconds | BLEU | length ratio |",
            "|---|---|---|---|---|"]
    alone, alone_seconds = best_of_two(translator, source, SEARCH,
                                       LineOptions(split_sentences=False))
    for k in (3, 10):
        refs = joined(reference, k)
        for split in (True, False):
            out, seconds = best_of_two(translator, joined(source, k), SEARCH,
                                       LineOptions(split_sentences=split))
            score = bleu.corpus_score(out, [refs])
            ratio = sum(len(o.split()) for o in out) / sum(len(r.split()) for r in refs)
            how = "split (default)" if split else "whole (--no-split-sentences)"
            rows.append(f"| {k} | {how} | {seconds:.1f} | {score.score:.2f} | {ratio:.3f} |")
            print(rows[-1], flush=True)
        out = joined(alone, k)
        ratio = sum(len(o.split()) for o in out) / sum(len(r.split()) for r in refs)
        rows.append(f"| {k} | 1 per line, joined after | {alone_seconds:.1f} | "
                    f"{bleu.corpus_score(out, [refs]).score:.2f} | {ratio:.3f} |")
    rows += ["", f"- model: {run_dir} (checkpoint best), beam 5, fp32, CPU, each row the faster of "
             f"two runs; BLEU signature: {bleu.get_signature()}"]
    record("Paragraphs: Multi30k test_2016_flickr joined 3 and 10 captions per line", rows)


if __name__ == "__main__":
    main()
