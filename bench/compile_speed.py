"""torch.compile against eager PyTorch for training, at the small preset's shape, on Multi30k.

The same batches (about 3,000 tokens, lengths changing every batch), the same model (4+4 x
d128, FFN 512, 4 heads, joint 4k vocabulary, dropout 0.1), the same train_step; compiled three
ways: not at all, every encoder and decoder layer on its own, and `encode` and `decode` whole.
All with dynamic=True, since padded lengths change from batch to batch. Reports the seconds of
the first six updates (where compilation happens) and target tokens/s after them.

Usage: python bench/compile_speed.py [seconds per measurement, default 40]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, record, require_multi30k  # noqa: E402

from tinytrans.config import build_config, merge  # noqa: E402
from tinytrans.data import FilterConfig, encode_parallel, length_sorted_batches, make_batch  # noqa: E402
from tinytrans.hardware import keep_freed_memory  # noqa: E402
from tinytrans.model import Transformer  # noqa: E402
from tinytrans.textio import read_parallel  # noqa: E402
from tinytrans.tokenizer import train_tokenizer  # noqa: E402
from tinytrans.objective import TeacherForcing  # noqa: E402
from tinytrans.schedule import make_optimizer  # noqa: E402
from tinytrans.train import Timings, train_step  # noqa: E402

VOCAB = 4000
SHAPE = {"d_model": 128, "n_heads": 4, "d_ff": 512, "n_encoder_layers": 4, "n_decoder_layers": 4,
         "dropout": 0.1}


def build(mode: str):
    torch.manual_seed(1)
    cfg = build_config(merge({}, {"model": {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB,
                                            **SHAPE}}))
    model = Transformer(cfg.model)
    if mode == "each layer":
        for layer in [*model.encoder_layers, *model.decoder_layers]:
            layer.compile(dynamic=True)
    elif mode == "encode and decode":
        model.encode = torch.compile(model.encode, dynamic=True)
        model.decode = torch.compile(model.decode, dynamic=True)
    return cfg, TeacherForcing(model), make_optimizer(model, cfg)


def measure(mode: str, corpus, batches, seconds: float) -> tuple[float, float]:
    cfg, objective, optimizer = build(mode)
    timings, cpu = Timings(), torch.device("cpu")

    def step(indices) -> int:
        batch = make_batch(corpus, indices)
        train_step(objective, [batch], optimizer, cfg, 1e-4, cpu, "fp32", timings)
        return batch.n_tgt_tokens
    start = time.perf_counter()
    for indices in batches[:6]:
        step(indices)
    first = time.perf_counter() - start
    tokens, start, i = 0, time.perf_counter(), 6
    while time.perf_counter() - start < seconds:
        tokens += step(batches[i % len(batches)])
        i += 1
    return first, tokens / (time.perf_counter() - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
    keep_freed_memory()
    m30k = require_multi30k()
    WORK.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer([m30k / "train.en.gz", m30k / "train.de.gz"], WORK / "m30k-spm4000", VOCAB)
    corpus = encode_parallel(read_parallel(m30k / "train", "en", "de"), tok, tok, FilterConfig())
    batches = length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, 3000, 1, 0)
    rows = ["| torch.compile | first 6 updates (s) | target tokens/s after them | vs eager |",
            "|---|---|---|---|"]
    eager = None
    for mode in ("none (eager)", "each layer", "encode and decode"):
        first, rate = measure(mode, corpus, batches, seconds)
        eager = eager or rate
        rows.append(f"| {mode} | {first:.1f} | {rate:,.0f} | {rate / eager:.2f}x |")
        print(rows[-1], flush=True)
    rows.append(f"\n- dynamic=True, inductor's CPU backend, fp32, {torch.get_num_threads()} threads, "
                f"{seconds:g} s per measurement")
    record("torch.compile for training, small preset shape, Multi30k", rows)


if __name__ == "__main__":
    main()
