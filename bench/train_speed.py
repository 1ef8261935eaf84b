"""Training throughput on Multi30k en-de: target (non-padding) tokens per second.

Model: 3+3 layers, d_model 256, FFN 1024, 4 heads, joint 8k SentencePiece vocabulary, batches of
about 4096 tokens, Adam, label smoothing 0.1, fp32. Compared in one run, on the same batches:

- tinytrans and PyTorch's own nn.Transformer of the same size doing the same work: dropout 0.1 on
  embeddings, residuals, attention weights and FFN activations (nn.Transformer's places; the
  peers' protocol);
- tinytrans as the small preset trains (dropout on embeddings and residuals only);
- tinytrans without any dropout, to price dropout;
- "before": tinytrans with F.dropout's masks and glibc's default allocator, measured first,
  since the allocator setting (hardware.keep_freed_memory) cannot be undone in a process.

R, the fp32 matrix-product rate at this model's shapes, is measured in the same run: forward +
backward cost about 45 MFLOP per target token, so 22 x R target tokens/s is the ceiling.

Usage: python bench/train_speed.py [seconds per measurement, default 45]
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
from tinytrans.hardware import keep_freed_memory  # noqa: E402
from tinytrans.model import Dropout, Transformer, sinusoidal_encoding  # noqa: E402
from tinytrans.textio import read_parallel  # noqa: E402
from tinytrans.tokenizer import PAD_ID, train_tokenizer  # noqa: E402
from tinytrans.schedule import make_optimizer  # noqa: E402
from tinytrans.train import Timings, train_step  # noqa: E402

VOCAB = 8000


class ReferenceTransformer(torch.nn.Module):
    """nn.Transformer (pre-norm) with tied embeddings and sinusoidal positions: the peer baseline.
    Dropout 0.1 where tinytrans puts it: embeddings, residuals, attention weights, FFN activations."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, 256, padding_idx=PAD_ID)
        torch.nn.init.normal_(self.embedding.weight, std=256 ** -0.5)
        self.core = torch.nn.Transformer(256, 4, 3, 3, 1024, 0.1, batch_first=True, norm_first=True)
        self.dropout = torch.nn.Dropout(0.1)

    def embed(self, ids):
        return self.dropout(self.embedding(ids) * 16 + sinusoidal_encoding(ids.size(1), 256))

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


CONFIGS = {  # dropout on (embeddings and residuals, attention weights, FFN activations)
    "equal": (0.1, 0.1, 0.1), "preset": (0.1, 0.0, 0.0), "none": (0.0, 0.0, 0.0)}


def measure_tinytrans(corpus, batches, seconds: float, precision: str, dropouts: str = "equal",
                      warmup: int = 2, torch_dropout: bool = False) -> tuple[float, Timings]:
    residual, attention, activation = CONFIGS[dropouts]
    torch.manual_seed(1)
    cfg = build_config(merge({}, {"model": {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB,
                                            "dropout": residual, "attention_dropout": attention,
                                            "activation_dropout": activation}}))
    model = Transformer(cfg.model)
    if torch_dropout:  # "before": every tinytrans Dropout replaced by torch's own
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, Dropout):
                    setattr(module, name, torch.nn.Dropout(child.p))
    optimizer = make_optimizer(model, cfg)
    timings = Timings()

    def step(batch):
        train_step(model, [batch], optimizer, cfg, 1e-4, torch.device("cpu"), precision, timings)
    rate = _timed(step, corpus, batches, seconds, timings, warmup)
    return rate, timings


def matmul_rate() -> float:
    """GFLOP/s of fp32 products at this model's shapes (a batch of ~3,400 tokens through the
    FFN and the output layer), the R of the ceiling 22 x R target tokens/s."""
    shapes = [(3400, 256, 1024), (3400, 1024, 256), (3400, 256, VOCAB)]
    flops = seconds = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            a @ b
            count += 1
        flops += 2 * m * k * n * count
        seconds += time.perf_counter() - start
    return flops / seconds / 1e9


def _split(timings: Timings) -> str:
    total = sum(vars(timings).values())
    return ", ".join(f"{name} {value / total:.0%}" for name, value in vars(timings).items()
                     if name != "validation")


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


def multi30k_corpus():
    """Multi30k en-de training pairs as ids of the joint 8k tokenizer (trained once, kept in
    bench/work)."""
    m30k = require_multi30k()
    WORK.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer([m30k / "train.en.gz", m30k / "train.de.gz"], WORK / "m30k-spm8k", VOCAB)
    return encode_parallel(read_parallel(m30k / "train", "en", "de"), tok, tok, FilterConfig())


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 45.0
    corpus = multi30k_corpus()
    batches = length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, 4096, 1, 0)
    rate_before = matmul_rate()
    before, before_split = measure_tinytrans(corpus, batches, seconds, "fp32", torch_dropout=True)
    reference_before = measure_reference(corpus, batches, seconds)
    keep_freed_memory()  # what `tinytrans train` does at start; from here on, "after"
    rate = matmul_rate()
    after, after_split = measure_tinytrans(corpus, batches, seconds, "fp32")
    reference = measure_reference(corpus, batches, seconds)
    preset, _ = measure_tinytrans(corpus, batches, seconds, "fp32", "preset")
    no_dropout, _ = measure_tinytrans(corpus, batches, seconds, "fp32", "none")
    rows = [
        "| model | dropout | allocator | target tokens/s | / R | vs nn.Transformer (same allocator) |",
        "|---|---|---|---|---|---|",
        f"| tinytrans, F.dropout masks (before) | full | glibc default | {before:,.0f} | "
        f"{before / rate_before:.1f} | {before / reference_before:.2f}x |",
        f"| nn.Transformer, fused Adam | full | glibc default | {reference_before:,.0f} | "
        f"{reference_before / rate_before:.1f} | 1.00x |",
        f"| tinytrans (after) | full | freed blocks kept | {after:,.0f} | {after / rate:.1f} | "
        f"{after / reference:.2f}x |",
        f"| nn.Transformer, fused Adam | full | freed blocks kept | {reference:,.0f} | "
        f"{reference / rate:.1f} | 1.00x |",
        f"| tinytrans, small preset's dropout | residuals only | freed blocks kept | {preset:,.0f} | "
        f"{preset / rate:.1f} | {preset / reference:.2f}x |",
        f"| tinytrans | none | freed blocks kept | {no_dropout:,.0f} | {no_dropout / rate:.1f} | "
        f"{no_dropout / reference:.2f}x |",
        "",
        f"- R (fp32 products at this model's shapes): {rate_before:.0f} GFLOP/s before, {rate:.0f} after; "
        f"ceiling about 22 x R = {22 * rate:,.0f} target tokens/s; bar 16 x R = {16 * rate:,.0f}",
        f"- time split before: {_split(before_split)}; after: {_split(after_split)}",
        f"- full dropout costs {1 - after / no_dropout:.0%} of the step's throughput after "
        "(\"full\": 0.1 on embeddings, residuals, attention weights and FFN activations)",
        f"- peak RSS of this process: {peak_rss_mb():.0f} MB; {len(batches)} batches per epoch, "
        f"{seconds:g} s per measurement",
    ]
    # measured whatever the CPU claims (bench/precision_check.py compares the two in detail)
    bf16, _ = measure_tinytrans(corpus, batches, min(seconds, 30.0), "bf16")
    rows.append(f"- bf16 autocast: {bf16:,.0f} target tokens/s, {bf16 / after:.2f}x fp32")
    record("Training throughput, Multi30k en-de, 3+3 x d256 / FFN 1024 / 4 heads, 8k joint vocab, "
           "4096-token batches", rows)


if __name__ == "__main__":
    main()
