"""Data pipeline speed and memory: check, encode and batch Multi30k en-de train, and a
1,000,000-pair corpus made by repeating it.

Each corpus is measured in a fresh child process, so peak RSS belongs to that corpus alone.
Usage: python bench/data_pipeline.py
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, peak_rss_mb, record, require_multi30k  # noqa: E402


def measure(prefix: str, tokenizer: str) -> dict:
    """Runs in the child: time each stage on one corpus."""
    from tinytrans.corpus_check import check_corpus
    from tinytrans.data import FilterConfig, encode_parallel, length_sorted_batches, padding_ratio
    from tinytrans.textio import read_parallel
    from tinytrans.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer)
    t0 = time.perf_counter()
    report = check_corpus(prefix, "en", "de")
    t1 = time.perf_counter()
    corpus = encode_parallel(read_parallel(prefix, "en", "de"), tok, tok, FilterConfig())
    t2 = time.perf_counter()
    batches = length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, 4096, 1, 0)
    t3 = time.perf_counter()
    return {"pairs": report.pairs, "kept": len(corpus), "check_s": t1 - t0, "encode_s": t2 - t1,
            "batch_s": t3 - t2, "batches": len(batches), "ids_mb": (corpus.src.nbytes + corpus.tgt.nbytes) / 1e6,
            "padding": padding_ratio(corpus, batches), "peak_rss_mb": peak_rss_mb()}


def make_million(source: Path, target_prefix: Path) -> None:
    """1,000,000 pairs: Multi30k train repeated (gzipped, as a user's big corpus might be)."""
    for lang in ("en", "de"):
        lines = gzip.open(source / f"train.{lang}.gz", "rb").read().splitlines(keepends=True)
        with gzip.open(f"{target_prefix}.{lang}.gz", "wb", compresslevel=1) as out:
            for i in range(1_000_000):
                out.write(lines[i % len(lines)])


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], sys.argv[3])))
        return
    multi30k = require_multi30k()
    WORK.mkdir(parents=True, exist_ok=True)
    from tinytrans.tokenizer import train_tokenizer
    tokenizer = WORK / "m30k-spm8k"
    train_tokenizer([multi30k / "train.en.gz", multi30k / "train.de.gz"], tokenizer, 8000)
    million = WORK / "million"
    if not Path(f"{million}.de.gz").is_file():
        make_million(multi30k, million)
    lines = ["| corpus | pairs | check s | encode s | batch s | pairs/s (all stages) | ids MB | padding | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, prefix in (("Multi30k train", multi30k / "train"), ("Multi30k x34.5 (1M)", million)):
        out = subprocess.run([sys.executable, __file__, "--child", str(prefix), f"{tokenizer}.model"],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        total = r["check_s"] + r["encode_s"] + r["batch_s"]
        lines.append(f"| {name} | {r['pairs']:,} | {r['check_s']:.2f} | {r['encode_s']:.2f} | "
                     f"{r['batch_s']:.2f} | {r['pairs'] / total:,.0f} | {r['ids_mb']:.1f} | "
                     f"{r['padding']:.1%} | {r['peak_rss_mb']:.0f} |")
    record("Data pipeline: check, encode (SentencePiece 8k joint), batch (4096 tokens)", lines)


if __name__ == "__main__":
    main()
