"""Training with torchrun on this machine: 2 processes x 1 thread against 1 process x 2 threads.

The same updates in both: preset small on Multi30k en-de (prepared once), two batches per
update: one per process with 2 processes, update_freq 2 with one. What is measured is
target tokens per second over the updates after the first 10 (start-up and allocator warm-up
left out). On two cores no gain is expected: the point is that several processes work and
what they cost (the gradient all-reduce over gloo, a second copy of the model and optimizer).

Usage: python bench/distributed_speed.py [updates, default 150]
       python bench/distributed_speed.py --check   # bundled corpus, tiny preset; records nothing
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BUNDLED, WORK, record, require_multi30k  # noqa: E402

WARMUP = 10  # updates left out of the rate


def run(label: str, launcher: list[str], data: Path, preset: str, updates: int, extra: list[str],
        env: dict[str, str]) -> dict:
    run_dir, every_update = WORK / f"distributed-{label}", WORK / "log-every-update.toml"
    every_update.write_text("[train]\nlog_every = 1\n")  # one log line per update: see below
    command = launcher + ["-m", "tinytrans", "train", "--data", str(data), "--preset", preset,
                          "--config", str(every_update), "--output", str(run_dir), "--overwrite",
                          "--max-steps", str(updates), "--validate-every", "100000",
                          "--checkpoint-every", "100000", "--quiet", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, **env})
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in records if r["event"] == "log"]
    start = next(r for r in records if r["event"] == "start")
    # with log_every 1, each line's rate times its update's seconds is its target tokens
    measured = list(zip(logs[WARMUP - 1:], logs[WARMUP:]))
    seconds = sum(b["elapsed"] - a["elapsed"] for a, b in measured)
    tokens = sum(b["tokens_per_second"] * (b["elapsed"] - a["elapsed"]) for a, b in measured)
    return {"rate": tokens / seconds, "wall": wall, "loss": logs[-1]["loss"],
            "batch_tokens": start["batch_tokens"]}


def main() -> None:
    check = "--check" in sys.argv[1:]
    args = [a for a in sys.argv[1:] if a != "--check"]
    updates = 12 + WARMUP if check else int(args[0]) if args else 150
    WORK.mkdir(parents=True, exist_ok=True)
    from tinytrans.config import resolve_train_config
    from tinytrans.prepared import open_prepared, prepare
    corpus, preset = (BUNDLED, "tiny") if check else (require_multi30k(), "small")
    data = WORK / f"prepared-{corpus.name}-{preset}"
    try:
        open_prepared(data)
    except Exception:  # noqa: BLE001 (absent or stale: either way, prepared again)
        # the data settings (vocabulary size) of the preset, as 'prepare --preset' takes them
        prepare(resolve_train_config({"data": {"train": str(corpus / "train")}}, preset).data, data)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two = run("2x1", torchrun, data, preset, updates, ["--threads", "1"], {"OMP_NUM_THREADS": "1"})
    one = run("1x2", [sys.executable], data, preset, updates, ["--threads", "2", "--update-freq", "2"],
              {})
    lines = ["| processes x threads | target tokens/s | wall seconds (start-up included) | loss at the end |",
             "|---|---|---|---|",
             f"| 1 x 2 (update_freq 2) | {one['rate']:,.0f} | {one['wall']:.0f} | {one['loss']:.3f} |",
             f"| 2 x 1 (torchrun, gloo) | {two['rate']:,.0f} | {two['wall']:.0f} | {two['loss']:.3f} |",
             "", f"- {updates} updates of 2 batches x {one['batch_tokens']} tokens, "
             f"preset {preset}; rates over updates {WARMUP + 1}..{updates}",
             f"- 2 processes reach {two['rate'] / one['rate']:.0%} of one process's rate"]
    if check:
        print("\n".join(lines))
        return
    record("torchrun on a 2-core CPU: 2 processes x 1 thread vs 1 process x 2 threads", lines)


if __name__ == "__main__":
    main()
