"""torch.compile against eager PyTorch for the decoder step of a search, on the Multi30k model.

    python bench/compile_decoding.py [RUN_DIR]

The one search loop's step (search_loop.next_log_probs: the decoder on the newest tokens with
the key/value cache, the logits and their log-softmax) is compiled with dynamic=True (the rows
and the cache's length change at every step), in a process of its own, and compared with the
same step eager, in a process of its own, on the same machine minutes apart. Both do the same
work: the 20-minute Multi30k model (`python bench/train_quality.py multi30k`), beam 5, fp32;
one sentence at a time over the first 100 test sentences (p50 latency, after 10 to warm up and
compile), then the whole test set (sentences/s). Reported with the seconds the first 10
sentences took, where compilation happens, at 2 and 1 threads.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, multi30k_test_set, record  # noqa: E402

LATENCY_SENTENCES, WARM_UP = 100, 10


def measure(run_dir: Path, mode: str, threads: int) -> dict:
    """In this process: the figures of one mode (eager or compiled)."""
    import torch

    from tinytrans import search_loop
    from tinytrans.config import SearchConfig
    from tinytrans.hardware import keep_freed_memory
    from tinytrans.translate import Translator

    keep_freed_memory()  # as the CLI does
    translator = Translator(run_dir, "best", "cpu", "fp32", threads=threads)
    if mode == "compiled":
        search_loop.next_log_probs = torch.compile(search_loop.next_log_probs, dynamic=True)
    source, _ = multi30k_test_set()
    cfg = SearchConfig(beam=5)
    start = time.perf_counter()
    for line in source[:WARM_UP]:
        list(translator.translate([line], cfg, chunk_lines=1))
    first = time.perf_counter() - start
    times = []
    for line in source[:LATENCY_SENTENCES]:
        start = time.perf_counter()
        list(translator.translate([line], cfg, chunk_lines=1))
        times.append(1000 * (time.perf_counter() - start))
    start = time.perf_counter()
    list(translator.translate(source, cfg))
    rate = len(source) / (time.perf_counter() - start)
    return {"first": first, "p50": statistics.median(times), "rate": rate}


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run_dir = Path(args[0]) if args else WORK / "quality-multi30k"
    if "--measure" in sys.argv:
        at = sys.argv.index("--measure")
        print(json.dumps(measure(run_dir, sys.argv[at + 1], int(sys.argv[at + 2]))))
        return
    rows = ["| threads | decoder step | first 10 sentences, s | one sentence p50 ms | "
            "test set sentences/s |", "|---|---|---|---|---|"]
    for threads in (2, 1):
        for mode in ("eager", "compiled"):
            done = subprocess.run([sys.executable, __file__, str(run_dir), "--measure", mode,
                                   str(threads)], check=True, capture_output=True, text=True)
            f = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(f"| {threads} | {mode} | {f['first']:.1f} | {f['p50']:.1f} | "
                        f"{f['rate']:.1f} |")
    rows += ["", f"- model: {run_dir}, beam 5, fp32; torch.compile(search_loop.next_log_probs, "
             "dynamic=True), inductor's default mode; each mode in a process of its own; one "
             f"sentence: a call per line over the first {LATENCY_SENTENCES} test sentences after "
             f"{WARM_UP} to warm up"]
    record("Decoder step: torch.compile against eager, Multi30k test_2016_flickr", rows)


if __name__ == "__main__":
    main()
