"""Decoding speed on Multi30k test_2016_flickr (1,000 sentences): beam 5 and greedy.

fp32 and int8 (dynamic quantisation). Uses the model trained by `python bench/train_quality.py multi30k` (3+3 layers, d_model 256,
FFN 1024, 4 heads). Reports sentences/s, output words/s (whitespace words of the detokenized
hypotheses), peak RSS, and how the time splits between the encoder, the decoder steps (decoder
layers and output projection) and everything else (search bookkeeping, tokenization).

Usage: python bench/decode_speed.py [RUN_DIR]
"""

from __future__ import annotations

import sys
import time

import sacrebleu
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, peak_rss_mb, record, require_multi30k  # noqa: E402

from tinytrans.search import SearchConfig  # noqa: E402
from tinytrans.textio import read_lines  # noqa: E402
from tinytrans.translate import Translator  # noqa: E402


class Stopwatch:
    """Wraps model methods to add up the seconds spent inside them."""

    def __init__(self, model, names):
        self.seconds = dict.fromkeys(names, 0.0)
        for name in names:
            setattr(model, name, self._wrap(getattr(model, name), name))

    def _wrap(self, method, name):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = method(*args, **kwargs)
            self.seconds[name] += time.perf_counter() - start
            return out
        return timed

    def reset(self):
        for name in self.seconds:
            self.seconds[name] = 0.0


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else WORK / "quality-multi30k"
    source = list(read_lines(require_multi30k() / "test_2016_flickr.en.gz"))
    reference = list(read_lines(require_multi30k() / "test_2016_flickr.de.gz"))
    lines = ["| search | precision | sentences/s | output words/s | BLEU | encoder | decoder steps | bookkeeping |",
             "|---|---|---|---|---|---|---|---|"]
    for precision in ("fp32", "int8"):
        translator = Translator(run_dir, "best", "cpu", precision)
        watch = Stopwatch(translator.model, ["encode", "decode", "logits"])
        for beam in (5, 1):
            cfg = SearchConfig(beam=beam)
            list(translator.translate(source[:100], cfg))  # warm-up
            watch.reset()
            start = time.perf_counter()
            outputs = [t.text for t in translator.translate(source, cfg)]
            seconds = time.perf_counter() - start
            words = sum(len(o.split()) for o in outputs)
            bleu = sacrebleu.corpus_bleu(outputs, [reference]).score
            enc = watch.seconds["encode"]
            dec = watch.seconds["decode"] + watch.seconds["logits"]
            lines.append(f"| {'greedy' if beam == 1 else f'beam {beam}'} | {precision} | "
                         f"{len(source) / seconds:.1f} | {words / seconds:,.0f} | {bleu:.2f} | "
                         f"{enc / seconds:.0%} | {dec / seconds:.0%} | {1 - (enc + dec) / seconds:.0%} |")
    lines += ["", f"- model: {run_dir} (checkpoint best), {translator.config.model}",
              "- BLEU: sacreBLEU 13a cased against test_2016_flickr.de; int8 = dynamic quantisation of all linear layers",
              f"- peak RSS: {peak_rss_mb():.0f} MB; 2 threads; batch 12000 source tokens x beam"]
    record("Decoding speed, Multi30k test_2016_flickr, 1,000 sentences", lines)


if __name__ == "__main__":
    main()
