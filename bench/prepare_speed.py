"""`tinytrans prepare` at scale, and training started from what it wrote.

1. prepare: pairs/s and peak memory for corpora of 1M and 5M pairs (Multi30k en-de train
   repeated with variations: repeat r rotates each line's words by r, so lengths stay realistic
   and lines differ), with 1 and 2 encoding workers and an existing 8k joint tokenizer.
2. train --data on the prepared 5M-pair corpus, preset small, 20 updates: seconds from the call
   to the first update and to the twentieth, and the peak RSS of the training process.

Every measurement runs in a fresh child process, so its peak memory is its own. prepare's peak is
given for the main process (ru_maxrss) and for the whole process tree (the highest sum of PSS,
which counts the pages workers share once, sampled every 0.1 s).

Usage: python bench/prepare_speed.py            # the full measurement (about 30 minutes on 2 cores)
       python bench/prepare_speed.py --check    # 20k and 50k pairs: checks the script, records nothing
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, peak_rss_mb, record, require_multi30k  # noqa: E402

VOCAB = 8000


def make_corpus(source: Path, prefix: Path, pairs: int) -> None:
    """`pairs` lines per side: Multi30k train, repeat r with every line's words rotated by r."""
    if Path(f"{prefix}.de.gz").is_file():
        return
    for lang in ("en", "de"):
        lines = gzip.open(source / f"train.{lang}.gz", "rt", encoding="utf-8").read().splitlines()
        tmp = Path(f"{prefix}.{lang}.gz.partial")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as out:
            for i in range(pairs):
                repeat, words = divmod(i, len(lines))[0], lines[i % len(lines)].split()
                shift = repeat % max(len(words), 1)
                out.write(" ".join(words[shift:] + words[:shift]) + "\n")
        tmp.rename(f"{prefix}.{lang}.gz")


class TreeMemory:
    """Samples the summed PSS of this process and all its descendants; keeps the peak."""

    def __init__(self):
        self.peak_mb, self.running = 0.0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak_mb = max(self.peak_mb, sum(map(_pss_mb, _tree(os.getpid()))))
            time.sleep(0.1)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return self.peak_mb


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def child_prepare(prefix: str, tokenizer: str, output: str, workers: int) -> dict:
    from tinytrans.config import DataConfig
    from tinytrans.prepared import prepare

    memory = TreeMemory()
    start = time.perf_counter()
    manifest = prepare(DataConfig(train=prefix, tokenizer=tokenizer, vocab_size=VOCAB),
                       Path(output), workers)
    seconds = time.perf_counter() - start
    split = manifest["splits"]["train"]
    return {"read": split["read"], "kept": split["kept"], "seconds": seconds,
            "main_rss_mb": peak_rss_mb(), "tree_pss_mb": memory.stop()}


def child_train(data: str, run_dir: str) -> dict:
    called = time.perf_counter()
    from tinytrans.config import resolve_train_config
    from tinytrans.train import train

    cfg = resolve_train_config({"data": {"prepared": data},
                                "train": {"max_steps": 20, "log_every": 1, "threads": 2}}, "small")
    marks: dict[str, float] = {}

    def report(event: dict) -> None:
        if event["event"] == "start":
            marks.setdefault("start", time.perf_counter())
        elif event["event"] == "log" and event["step"] in (1, 20):
            marks[f"step{event['step']}"] = time.perf_counter()
    train(cfg, Path(run_dir), overwrite=True, report=report)
    return {"to_start": marks["start"] - called, "to_first": marks["step1"] - called,
            "to_twentieth": marks["step20"] - called, "peak_rss_mb": peak_rss_mb()}


def in_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        kind, *args = sys.argv[2:]
        if kind == "prepare":
            print(json.dumps(child_prepare(args[0], args[1], args[2], int(args[3]))))
        else:
            print(json.dumps(child_train(*args)))
        return
    check = "--check" in sys.argv[1:]
    sizes = [20_000, 50_000] if check else [1_000_000, 5_000_000]
    multi30k = require_multi30k()
    WORK.mkdir(parents=True, exist_ok=True)
    from tinytrans.tokenizer import train_tokenizer
    tokenizer = WORK / "m30k-spm8k"
    if not Path(f"{tokenizer}.model").is_file():
        train_tokenizer([multi30k / "train.en.gz", multi30k / "train.de.gz"], tokenizer, VOCAB)
    lines = ["| pairs | workers | seconds | pairs/s | peak RSS, main process MB | peak PSS, all processes MB |",
             "|---|---|---|---|---|---|"]
    for pairs in sizes:
        prefix = WORK / f"m30k-varied-{pairs}"
        make_corpus(multi30k, prefix, pairs)
        for workers in (1, 2):
            r = in_child("prepare", str(prefix), f"{tokenizer}.model",
                         str(WORK / f"prepared-{pairs}"), str(workers))
            lines.append(f"| {r['read']:,} | {workers} | {r['seconds']:.1f} | "
                         f"{r['read'] / r['seconds']:,.0f} | {r['main_rss_mb']:.0f} | "
                         f"{r['tree_pss_mb']:.0f} |")
            print(lines[-1], flush=True)
    largest = WORK / f"prepared-{sizes[-1]}"
    t = in_child("train", str(largest), str(WORK / "prepared-train-run"))
    lines += ["", f"- train --data ({sizes[-1]:,} pairs prepared), preset small, 20 updates, "
              f"2 threads: set-up done (manifest and checksums checked, files mapped) after "
              f"{t['to_start']:.1f} s, first update after {t['to_first']:.1f} s, twentieth after "
              f"{t['to_twentieth']:.1f} s; peak RSS {t['peak_rss_mb']:.0f} MB",
              "- corpus: Multi30k en-de train repeated, repeat r with each line's words rotated by r; "
              "existing 8k joint SentencePiece model (--tokenizer), so no tokenizer training"]
    if check:
        print("\n".join(lines))
        return
    record("prepare: pairs/s and memory at 1M and 5M pairs; training start-up from 5M prepared", lines)


if __name__ == "__main__":
    main()
