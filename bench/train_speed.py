"""Training throughput on Multi30k en-de: target (non-padding) tokens per second.

Model: 3+3 layers, d_model 256, FFN 1024, 4 heads, joint 8k SentencePiece vocabulary, batches of
about 4096 tokens, Adam, label smoothing 0.1, dropout 0.1. Measured for tinytrans in fp32 and
bf16, and for PyTorch's own nn.Transformer of the same size in the same run, so the ratio holds
even on a noisy shared machine. Also: where tinytrans' time goes (data, forward, backward,
optimizer) and its peak RSS.

Usage: python bench/train_speed.py [seconds per measurement, default 60]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, peak_rss_mb, record, require_multi30k  # noqa: E402

from tinytrans.config import build_config, merge  # noqa: E402
from tinytrans.data import FilterConfig, encode_parallel, length_sorted_batches, make_batch  # noqa: E402
from tinytrans.model import Transformer, sinusoidal_encoding  # noqa: E402
from tinytrans.textio import read_parallel  # noqa: E402
from tinytrans.tokenizer import PAD_ID, train_tokenizer  # noqa: E402
from tinytrans.train import Timings, make_optimizer, train_step  # noqa: E402

VOCAB = 8000


class ReferenceTransformer(torch.nn.Module):
    """nn.Transformer (pre-norm) with tied embeddings and sinusoidal positions: the peer baseline."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, 256, padding_idx=PAD_ID)
        torch.nn.init.normal_(self.embedding.weight, std=256 ** -0.5)
        self.core = torch.nn.Transformer(256, 4, 3, 3, 1024, 0.1, batch_first=True, norm_first=True)

    def embed(self, ids):
        return self.embedding(ids) * 16 + sinusoidal_encoding(ids.size(1), 256)

    def forward(self, src, tgt):
        pad = src == PAD_ID
        causal = torch.nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        return self.core(self.embed(src), self.embed(tgt), tgt_mask=causal, tgt_is_causal=True,
                         src_key_padding_mask=pad, memory_key_padding_mask=pad)


def measure_reference(corpus, batches, seconds: float) -> float:
    torch.manual_seed(1)
    model = ReferenceTransformer()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)

    def step(batch):
        states = model(batch.src, batch.tgt_in)
        keep = batch.tgt_out != PAD_ID
        loss = F.cross_entropy(F.linear(states[keep], model.embedding.weight), batch.tgt_out[keep],
                               label_smoothing=0.1, reduction="sum")
        (loss / keep.sum()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return _timed(step, corpus, batches, seconds)


def measure_tinytrans(corpus, batches, seconds: float, precision: str,
                      warmup: int = 2) -> tuple[float, Timings]:
    torch.manual_seed(1)
    cfg = build_config(merge({}, {"model": {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB,
                                            "dropout": 0.1}}))
    model = Transformer(cfg.model)
    optimizer = make_optimizer(model, cfg, torch.device("cpu"))
    timings = Timings()

    def step(batch):
        train_step(model, [batch], optimizer, cfg, 1e-4, torch.device("cpu"), precision, timings)
    rate = _timed(step, corpus, batches, seconds, timings, warmup)
    return rate, timings


def _timed(step, corpus, batches, seconds: float, timings: Timings | None = None,
           warmup: int = 2) -> float:
    for indices in batches[:warmup]:  # warm-up: allocator, thread pools
        step(make_batch(corpus, indices))
    if timings is not None:
        for name in vars(timings):
            setattr(timings, name, 0.0)
    tokens, start, i = 0, time.perf_counter(), warmup
    while tokens == 0 or time.perf_counter() - start < seconds:
        fetch = time.perf_counter()
        batch = make_batch(corpus, batches[i % len(batches)])
        if timings is not None:
            timings.data += time.perf_counter() - fetch
        tokens += batch.n_tgt_tokens
        step(batch)
        i += 1
    return tokens / (time.perf_counter() - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    m30k = require_multi30k()
    WORK.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer([m30k / "train.en.gz", m30k / "train.de.gz"], WORK / "m30k-spm8k", VOCAB)
    corpus = encode_parallel(read_parallel(m30k / "train", "en", "de"), tok, tok, FilterConfig())
    batches = length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, 4096, 1, 0)
    ours_fp32, timings = measure_tinytrans(corpus, batches, seconds, "fp32")
    reference = measure_reference(corpus, batches, seconds)
    ours_again, _ = measure_tinytrans(corpus, batches, seconds / 2, "fp32")
    # Without AMX or AVX-512 BF16 one bf16 step takes about a minute: one warm-up, one measured.
    ours_bf16, _ = measure_tinytrans(corpus, batches, 0.0, "bf16", warmup=1)
    total = sum(vars(timings).values())
    shares = ", ".join(f"{name} {value / total:.0%}" for name, value in vars(timings).items()
                       if name != "validation")
    lines = [
        "| model | precision | target tokens/s | vs nn.Transformer |", "|---|---|---|---|",
        f"| tinytrans | fp32 | {ours_fp32:,.0f} (again at the end: {ours_again:,.0f}) | "
        f"{ours_fp32 / reference:.2f}x |",
        f"| tinytrans | bf16 autocast | {ours_bf16:,.0f} | {ours_bf16 / reference:.2f}x |",
        f"| nn.Transformer, same size, fused Adam | fp32 | {reference:,.0f} | 1.00x |",
        "", f"- tinytrans fp32 time split: {shares}",
        f"- peak RSS of this process (three models, Multi30k encoded): {peak_rss_mb():.0f} MB",
        f"- {len(batches)} batches per epoch, {seconds:g} s per measurement",
    ]
    record("Training throughput, Multi30k en-de, 3+3 x d256 / FFN 1024 / 4 heads, 8k joint vocab, 4096-token batches", lines)


if __name__ == "__main__":
    main()
