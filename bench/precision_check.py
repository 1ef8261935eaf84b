"""Is `--precision auto` right on this CPU? The probe's verdict against what training measures.

    python bench/precision_check.py            # tiny and small presets, ~2 minutes

For each preset's model: what the probe (hardware.time_bf16_speedup, timed from a cold cache)
says bf16 autocast is worth against fp32, how long it took, and what training itself measures:
target tokens/s of N real training updates (tinytrans.train.train_step) in fp32 and in bf16 on
the same batches, in alternating rounds
(fp32, bf16, fp32, bf16) so a change in the machine's load falls on both. Also the machine's
matrix products in both precisions at 2048^3. Both sides do the same work: the same model, the
same batches, the same optimizer; only the autocast differs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BUNDLED, WORK, record  # noqa: E402

from tinytrans.config import PRESETS, build_config  # noqa: E402
from tinytrans.data import FilterConfig, encode_parallel, length_sorted_batches, make_batch  # noqa: E402
from tinytrans.hardware import autocast, keep_freed_memory, pick_precision, probe_rows  # noqa: E402
from tinytrans.model import Transformer  # noqa: E402
from tinytrans.textio import read_parallel  # noqa: E402
from tinytrans.tokenizer import Tokenizer, train_tokenizer  # noqa: E402
from tinytrans.schedule import make_optimizer  # noqa: E402
from tinytrans.train import Timings, train_step  # noqa: E402

ROUNDS = 2
UPDATES = {"tiny": 30, "small": 30, "base": 8}
BASE_BATCH_TOKENS = 4096  # the base preset's 25,000 would make this bench take many minutes


def matmul_rate(precision: str, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    with autocast(torch.device("cpu"), precision):
        a @ b
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            a @ b
            count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def preset_batches(name: str):
    """The preset's model config (vocabulary from a tokenizer trained on the bundled corpus) and
    its batches of the bundled training corpus."""
    values = {section: dict(table) for section, table in PRESETS[name].items()}
    vocab = min(values["data"]["vocab_size"], 4000)  # the bundled corpus holds ~4,190 pieces at most
    prefix = WORK / f"precision-spm-{vocab}"
    if not Path(f"{prefix}.model").is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        train_tokenizer([BUNDLED / "train.en", BUNDLED / "train.de"], prefix, vocab)
    tok = Tokenizer.load(Path(f"{prefix}.model"))
    values["model"].update(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size)
    if name == "base":
        values["train"]["batch_tokens"] = BASE_BATCH_TOKENS
    values["train"].pop("max_time", None)
    values["train"].pop("lr_schedule", None)
    cfg = build_config(values, f"preset {name}")
    pairs = read_parallel(str(BUNDLED / "train"), "en", "de")
    corpus = encode_parallel(pairs, tok, tok, FilterConfig(cfg.data.max_length, cfg.data.max_ratio))
    batches = length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, cfg.train.batch_tokens, 1, 0)
    return cfg, [make_batch(corpus, b) for b in batches[:UPDATES[name] + 2]]


def tokens_per_second(cfg, batches, precision: str) -> float:
    torch.manual_seed(1)
    model = Transformer(cfg.model)
    optimizer = make_optimizer(model, cfg)
    timings, cpu = Timings(), torch.device("cpu")
    for batch in batches[:2]:  # warm-up: kernels chosen, memory allocated
        train_step(model, [batch], optimizer, cfg, 1e-4, cpu, precision, timings)
    start, tokens = time.perf_counter(), 0
    for batch in batches[2:]:
        train_step(model, [batch], optimizer, cfg, 1e-4, cpu, precision, timings)
        tokens += batch.n_tgt_tokens
    return tokens / (time.perf_counter() - start)


def main() -> None:
    keep_freed_memory()  # as the CLI does
    rows = [f"- matrix products at 2048^3: fp32 {matmul_rate('fp32'):.0f} GFLOP/s, "
            f"bf16 autocast {matmul_rate('bf16'):.0f} GFLOP/s", "",
            "| preset | probe: bf16 / fp32 | probe time (cold cache) | auto picks | training fp32 "
            "tok/s | training bf16 tok/s | training bf16 / fp32 | auto right? |",
            "|---|---|---|---|---|---|---|---|"]
    for name in ("tiny", "small", "base"):
        cfg, batches = preset_batches(name)
        with tempfile.TemporaryDirectory() as cache:
            os.environ["TINYTRANS_CACHE_DIR"] = cache
            start = time.perf_counter()
            choice = pick_precision("auto", torch.device("cpu"), cfg.model, rows=cfg.train.batch_tokens)
            probe_seconds = time.perf_counter() - start
        measured = {"fp32": [], "bf16": []}
        for _ in range(ROUNDS):
            for precision in ("fp32", "bf16"):
                measured[precision].append(tokens_per_second(cfg, batches, precision))
        fp32, bf16 = max(measured["fp32"]), max(measured["bf16"])
        # right: bf16 where training is clearly faster (the probe's own 1.2x), fp32 where it is
        # slower; in between either is fine ("margin")
        ratio = bf16 / fp32
        right = "margin" if 1.0 <= ratio < 1.2 else \
            "yes" if (choice.precision == "bf16") == (ratio >= 1.2) else "NO"
        rows.append(f"| {name} | {choice.reason.split()[2]} | {probe_seconds:.2f} s | "
                    f"{choice.precision} | {fp32:,.0f} | {bf16:,.0f} | {bf16 / fp32:.2f}x | "
                    f"{right} |")
        print(rows[-1], flush=True)
    rows += ["", f"- updates per measurement on the bundled corpus {UPDATES}, best of {ROUNDS} "
             f"alternating rounds (vocabularies at most 4,000: the corpus holds no more; base with "
             f"{BASE_BATCH_TOKENS}-token batches); the probe's batch: "
             f"{probe_rows(cfg.model, cfg.train.batch_tokens)} target tokens (base)"]
    record("Precision: the probe's verdict against training in fp32 and bf16", rows)


if __name__ == "__main__":
    main()
