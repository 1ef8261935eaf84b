"""What each decoding feature costs, on Multi30k test_2016_flickr with one model in one process.

    python bench/decoding_features.py [RUN_DIR]    # default: bench/work/quality-multi30k

The same 1,000 sentences, fp32, CPU, one after another (each the faster of two runs): beam 5,
beam 5 with word alignments, greedy, sampling (one sample per sentence, all tokens; and five),
and documents: the test set joined ten sentences per line, which the translator splits into
sentences and joins back (the lines fit the model here, so the split is asked for), against the
same sentences one per line. Reports seconds, sentences/s and BLEU (for documents: of the joined
lines against the joined references).
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

DOCUMENT = 10  # sentences per line in the documents run


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else WORK / "quality-multi30k"
    source, reference = multi30k_test_set()
    translator = Translator(run_dir, "best", "cpu", "fp32")
    list(translator.translate(source[:50], SearchConfig()))  # warm-up
    bleu = sacrebleu.BLEU()
    rows = ["| decoding | seconds | sentences/s | BLEU |", "|---|---|---|---|"]
    runs = [("beam 5", SearchConfig(beam=5), LineOptions()),
            ("beam 5 + --alignment", SearchConfig(beam=5), LineOptions(alignment=True)),
            ("greedy", SearchConfig(beam=1), LineOptions()),
            ("--sample all (1 per sentence)", SearchConfig(sample=0, seed=1), LineOptions()),
            ("--sample all --nbest 5", SearchConfig(sample=0, nbest=5, seed=1), LineOptions())]
    for name, cfg, options in runs:
        out, seconds = best_of_two(translator, source, cfg, options)
        rows.append(f"| {name} | {seconds:.1f} | {len(source) / seconds:.0f} | "
                    f"{bleu.corpus_score(out, [reference]).score:.2f} |")
    documents = [" ".join(source[i:i + DOCUMENT]) for i in range(0, len(source), DOCUMENT)]
    joined_refs = [" ".join(reference[i:i + DOCUMENT]) for i in range(0, len(reference), DOCUMENT)]
    sentences, seconds = best_of_two(translator, source, SearchConfig(beam=5))
    joined = [" ".join(sentences[i:i + DOCUMENT]) for i in range(0, len(sentences), DOCUMENT)]
    rows.append(f"| sentences one per line, joined after | {seconds:.1f} | "
                f"{len(source) / seconds:.0f} | {bleu.corpus_score(joined, [joined_refs]).score:.2f} |")
    out, seconds = best_of_two(translator, documents, SearchConfig(beam=5),
                               LineOptions(split_sentences=True))
    rows.append(f"| {DOCUMENT} sentences per line, --split-sentences | {seconds:.1f} | "
                f"{len(source) / seconds:.0f} | {bleu.corpus_score(out, [joined_refs]).score:.2f} |")
    same = sum(a == b for a, b in zip(out, joined))
    ended = sum(line.rstrip().endswith((".", "!", "?")) for line in source)
    rows += ["", f"- documents: {same}/{len(documents)} joined lines identical to the sentences "
             "translated one per line and joined; the splitter finds a boundary only after . ! ?, "
             f"which {ended} of the {len(source)} captions end with (a line of ten has all its "
             f"boundaries with probability {(ended / len(source)) ** DOCUMENT:.2f})",
             f"- model: {run_dir} (checkpoint best), fp32, CPU, each row the faster of two runs; "
             f"BLEU signature: {bleu.get_signature()}"]
    record("What each decoding feature costs, Multi30k test_2016_flickr en-de", rows)


if __name__ == "__main__":
    main()
