"""Quality within a time budget: train a preset, then score the test set, greedy and beam 5.

    python bench/train_quality.py tiny       # bundled corpus, tiny preset (bar: BLEU >= 90, <= 6 min)
    python bench/train_quality.py multi30k   # Multi30k en-de, small preset, 20 minutes (bar: >= 30)

Training and evaluation run as child processes through the real CLI, so the figures are what a
user gets, and peak RSS is the training process' own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BUNDLED, WORK, record, require_multi30k  # noqa: E402

SETUPS = {
    "tiny": lambda: dict(preset="tiny", train=BUNDLED / "train", valid=BUNDLED / "valid",
                         test=BUNDLED / "test", extra=[]),
    "multi30k": lambda: dict(preset="small", train=require_multi30k() / "train",
                             valid=require_multi30k() / "val",
                             test=require_multi30k() / "test_2016_flickr", extra=[]),
}


def run(args: list[str]) -> str:
    return subprocess.run([sys.executable, "-m", "tinytrans", *args], check=True,
                          capture_output=True, text=True).stdout


def train_and_record(name: str, setup: dict, run_dir: Path, extra: list[str]) -> None:
    start = time.perf_counter()
    run(["train", "--preset", setup["preset"], "--train", str(setup["train"]), "--valid",
         str(setup["valid"]), "--src", "en", "--tgt", "de", "--output", str(run_dir), "--overwrite",
         *setup["extra"], *extra])
    wall = time.perf_counter() - start
    train_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logs = [m for m in metrics if m["event"] == "log"]
    valids = [m for m in metrics if m["event"] == "valid"]
    record(f"Training: preset {setup['preset']} on {name}", [
        f"- {logs[-1]['step']} updates logged, {logs[-1]['elapsed']:.0f} s of training at the last log "
        f"({wall:.0f} s wall including tokenizer, data preparation and validations), "
        f"peak RSS {train_rss:.0f} MB",
        f"- mean training throughput: {sum(m['tokens_per_second'] for m in logs) / len(logs):,.0f} target tokens/s",
        "- validation BLEU (greedy) by step: "
        + ", ".join(f"{v['step']}: {v['bleu']:.2f}" for v in valids)])


def main() -> None:
    """Usage: train_quality.py tiny|multi30k [--evaluate-only] [extra train flags...]"""
    name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    extra = [a for a in sys.argv[2:] if a != "--evaluate-only"]
    setup = SETUPS[name]()
    run_dir = WORK / f"quality-{name}"
    if "--evaluate-only" not in sys.argv:
        train_and_record(name, setup, run_dir, extra)
    lines = ["| search | test BLEU | chrF | TER | sentences/s | BLEU signature |", "|---|---|---|---|---|---|"]
    for beam in (1, 5):
        out = run(["evaluate", "--model", str(run_dir), "--test", str(setup["test"]), "--src", "en",
                   "--tgt", "de", "--beam", str(beam), "--json"])
        r = json.loads(out.strip().splitlines()[-1])
        lines.append(f"| {'greedy' if beam == 1 else f'beam {beam}'} | {r['bleu']:.2f} | {r['chrf']:.2f} | "
                     f"{r['ter']:.2f} | {r['sentences_per_second']:.1f} | `{r['signatures']['bleu']}` |")
    record(f"Test scores: preset {setup['preset']} on {name} ({setup['test'].name}), checkpoint best", lines)


if __name__ == "__main__":
    main()
