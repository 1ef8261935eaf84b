"""Decoding speed on Multi30k test_2016_flickr (1,000 sentences): beam 5 and greedy.

fp32 and int8 (dynamic quantisation). Uses the model trained by `python bench/train_quality.py
multi30k` (the small preset's), or the run directory given. Reports sentences/s, output words/s
(whitespace words of the detokenized hypotheses), peak RSS, and how the time splits between the
encoder, the decoder steps (decoder layers and output projection) and everything else (search
bookkeeping, tokenization). Each configuration: a warm-up, then the faster of two rounds.

Then the comparison with CTranslate2 on the same weights (`tinytrans export`): whole processes
as a user runs them, start-up and model load included (`tinytrans translate --input --output`
against bench/ct2_translate.py), same threads, same 1,000 sentences, fp32 and int8, beam 5 and
greedy, interleaved in one run. Needs the export extra (ctranslate2).

With --ct2-in-process: each engine loaded once in a process of its own and timed inside it
(two engines in one process slow each other), fp32, 2 threads and 1, the same line handling
(tinytrans' `--engine ctranslate2` wraps CTranslate2 in it), so the rows differ only in the
search: the whole test set, and one sentence at a time (a user typing, a server with one client:
p50 and p90 latency over the first 200 sentences); the better of two alternating runs.

Usage: python bench/decode_speed.py [RUN_DIR] [--processes-only | --in-process-only |
                                               --ct2-in-process]
"""

from __future__ import annotations

import subprocess
import sys
import time

import sacrebleu
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, multi30k_test_set, peak_rss_mb, record  # noqa: E402

from tinytrans.config import SearchConfig  # noqa: E402
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


ROUNDS = 2


def timed_rounds(translator: Translator, watch: Stopwatch, source: list[str],
                 cfg: SearchConfig) -> list[tuple[float, list[str], float, float]]:
    """ROUNDS timings of the whole test set: (seconds, outputs, encoder seconds, decoder seconds)."""
    rounds = []
    for _ in range(ROUNDS):
        watch.reset()
        start = time.perf_counter()
        outputs = [t.text for t in translator.translate(source, cfg)]
        seconds = time.perf_counter() - start
        rounds.append((seconds, outputs, watch.seconds["encode"],
                       watch.seconds["decode"] + watch.seconds["logits"]))
    return rounds


def whole_processes(run_dir: Path, source: list[str], reference: list[str]) -> list[str]:
    """tinytrans and CTranslate2 translating the test set as separate processes, timed end to end."""
    WORK.mkdir(parents=True, exist_ok=True)
    source_file = WORK / "test_2016_flickr.en"
    source_file.write_text("".join(line + "\n" for line in source), encoding="utf-8")
    exported = {}
    for precision, quantization in (("fp32", []), ("int8", ["--quantization", "int8"])):
        exported[precision] = WORK / f"ct2-{run_dir.name}-{precision}"
        subprocess.run(["rm", "-rf", str(exported[precision])], check=True)
        subprocess.run([sys.executable, "-m", "tinytrans", "export", "--model", str(run_dir),
                        "--output", str(exported[precision]), *quantization], check=True)
    rows = ["| search | precision | engine | sentences/s | output words/s | BLEU | same 1-best as tinytrans |",
            "|---|---|---|---|---|---|---|"]
    for beam in (5, 1):
        for precision in ("fp32", "int8"):
            out = {name: WORK / f"out-{name}-{precision}-beam{beam}.de" for name in ("tinytrans", "ct2")}
            commands = {
                "tinytrans": [sys.executable, "-m", "tinytrans", "translate", "--model", str(run_dir),
                              "--beam", str(beam), "--precision", precision, "--threads", "2",
                              "--device", "cpu", "--input", str(source_file), "--output", str(out["tinytrans"])],
                "ct2": [sys.executable, str(Path(__file__).parent / "ct2_translate.py"),
                        str(exported[precision]), str(source_file), str(out["ct2"]), str(beam), "2"],
            }
            seconds = {}
            for name in ("tinytrans", "ct2", "tinytrans", "ct2"):  # twice each, interleaved: the faster
                start = time.perf_counter()
                subprocess.run(commands[name], check=True, capture_output=True)
                seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - start)
            texts = {name: out[name].read_text(encoding="utf-8").splitlines() for name in out}
            same = sum(a == b for a, b in zip(texts["tinytrans"], texts["ct2"]))
            for name, label in (("tinytrans", "tinytrans"), ("ct2", "CTranslate2")):
                words = sum(len(t.split()) for t in texts[name])
                bleu = sacrebleu.corpus_bleu(texts[name], [reference]).score
                rows.append(f"| {'greedy' if beam == 1 else f'beam {beam}'} | {precision} | {label} | "
                            f"{len(source) / seconds[name]:.1f} | {words / seconds[name]:,.0f} | {bleu:.2f} | "
                            f"{'' if name == 'tinytrans' else f'{same}/{len(source)}'} |")
    rows += ["", "- whole processes (imports, model load, tokenization, search, writing the file), "
             "2 threads each, the faster of two interleaved runs; CTranslate2 "
             f"{__import__('ctranslate2').__version__} on the weights exported by `tinytrans export`"]
    return rows


LATENCY_SENTENCES = 200


def engine_figures(engine_name: str, run_dir: Path, threads: int) -> dict:
    """In this process, one engine alone (two engines in one process slow each other: each
    one's idle OpenMP threads keep spinning): the test set's sentences/s and outputs, and the
    latency of one sentence at a time, beam 5 and greedy."""
    import json
    from tinytrans.ct2engine import CT2Translator
    source, _ = multi30k_test_set()
    engine = Translator(run_dir, "best", "cpu", "fp32", threads=threads) \
        if engine_name == "tinytrans" \
        else CT2Translator(WORK / f"ct2-{run_dir.name}-fp32", "cpu", threads=threads)
    figures = {}
    for beam in (5, 1):
        cfg = SearchConfig(beam=beam)
        list(engine.translate(source[:50], cfg))  # warm-up
        start = time.perf_counter()
        outputs = [t.text for t in engine.translate(source, cfg)]
        rate = len(source) / (time.perf_counter() - start)
        times = []
        for line in source[:LATENCY_SENTENCES]:
            start = time.perf_counter()
            list(engine.translate([line], cfg, chunk_lines=1))
            times.append(1000 * (time.perf_counter() - start))
        times.sort()
        figures[str(beam)] = {"rate": rate, "outputs": outputs, "p50": times[len(times) // 2],
                              "p90": times[int(len(times) * 0.9)]}
    print(json.dumps(figures))
    return figures


def against_ct2_in_process(run_dir: Path, source: list[str], reference: list[str]) -> list[str]:
    """tinytrans' engine and CTranslate2's, each in a process of its own and timed inside it,
    on the same weights and lines, alternating (tinytrans, CTranslate2, tinytrans,
    CTranslate2), the better of two runs for each figure."""
    import json
    exported = WORK / f"ct2-{run_dir.name}-fp32"
    if not (exported / "model.bin").is_file():
        subprocess.run(["rm", "-rf", str(exported)], check=True)
        subprocess.run([sys.executable, "-m", "tinytrans", "export", "--model", str(run_dir),
                        "--output", str(exported)], check=True)
    rows = ["| threads | search | engine | test set, sentences/s | vs CTranslate2 | one sentence: "
            "p50 ms | p90 ms | p50 vs CTranslate2 | BLEU |", "|---|---|---|---|---|---|---|---|---|"]
    for threads in (2, 1):
        best: dict[str, dict] = {}
        for _ in range(ROUNDS):
            for name in ("tinytrans", "CTranslate2"):
                done = subprocess.run([sys.executable, __file__, str(run_dir), "--measure-engine",
                                       name, str(threads)], check=True, capture_output=True,
                                      text=True)
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                for beam, f in figures.items():
                    kept = best.setdefault(name, {}).setdefault(beam, f)
                    kept["rate"] = max(kept["rate"], f["rate"])
                    kept["p50"], kept["p90"] = min(kept["p50"], f["p50"]), min(kept["p90"], f["p90"])
        for beam in ("5", "1"):
            ct2 = best["CTranslate2"][beam]
            for name in ("tinytrans", "CTranslate2"):
                f = best[name][beam]
                bleu = sacrebleu.corpus_bleu(f["outputs"], [reference]).score
                rows.append(f"| {threads} | {'greedy' if beam == '1' else f'beam {beam}'} | {name} | "
                            f"{f['rate']:.1f} | {f['rate'] / ct2['rate']:.2f}x | {f['p50']:.1f} | "
                            f"{f['p90']:.1f} | {f['p50'] / ct2['p50']:.2f}x | {bleu:.2f} |")
    same = {beam: sum(a == b for a, b in zip(best["tinytrans"][beam]["outputs"],
                                             best["CTranslate2"][beam]["outputs"]))
            for beam in ("5", "1")}
    rows += ["", f"- each engine in a process of its own, timed inside it (model loaded), fp32, "
             f"2 and 1 threads, the same line handling (tinytrans' `--engine ctranslate2`); the better of "
             f"{ROUNDS} alternating runs; one sentence: a call per line over the first "
             f"{LATENCY_SENTENCES} lines; same 1-best: beam 5 {same['5']}/{len(source)}, greedy "
             f"{same['1']}/{len(source)}; CTranslate2 {__import__('ctranslate2').__version__}"]
    return rows


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else WORK / "quality-multi30k"
    source, reference = multi30k_test_set()
    if "--measure-engine" in sys.argv:
        at = sys.argv.index("--measure-engine")
        engine_figures(sys.argv[at + 1], run_dir, int(sys.argv[at + 2]))
        return
    if "--ct2-in-process" in sys.argv:
        record("Decoding in one process against CTranslate2, Multi30k test_2016_flickr",
               against_ct2_in_process(run_dir, source, reference))
        return
    if "--in-process-only" not in sys.argv:
        record("Decoding speed against CTranslate2 on the same weights, Multi30k test_2016_flickr",
               whole_processes(run_dir, source, reference))
    if "--processes-only" in sys.argv:
        return
    lines = ["| search | precision | sentences/s | output words/s | BLEU | encoder | decoder steps | bookkeeping |",
             "|---|---|---|---|---|---|---|---|"]
    for precision in ("fp32", "int8"):
        translator = Translator(run_dir, "best", "cpu", precision)
        watch = Stopwatch(translator.model, ["encode", "decode", "logits"])
        for beam in (5, 1):
            cfg = SearchConfig(beam=beam)
            list(translator.translate(source[:100], cfg))  # warm-up
            seconds, outputs, enc, dec = min(timed_rounds(translator, watch, source, cfg))
            words = sum(len(o.split()) for o in outputs)
            bleu = sacrebleu.corpus_bleu(outputs, [reference]).score
            lines.append(f"| {'greedy' if beam == 1 else f'beam {beam}'} | {precision} | "
                         f"{len(source) / seconds:.1f} | {words / seconds:,.0f} | {bleu:.2f} | "
                         f"{enc / seconds:.0%} | {dec / seconds:.0%} | {1 - (enc + dec) / seconds:.0%} |")
    lines += ["", f"- model: {run_dir} (checkpoint best), {translator.config.model}",
              "- BLEU: sacreBLEU 13a cased against test_2016_flickr.de; int8 = dynamic quantisation of all linear layers",
              f"- peak RSS: {peak_rss_mb():.0f} MB; 2 threads; batch 12000 source tokens x beam; "
              f"the faster of {ROUNDS} rounds (one round of one configuration varies by up to 20%)"]
    record("Decoding speed, Multi30k test_2016_flickr, 1,000 sentences", lines)


if __name__ == "__main__":
    main()
