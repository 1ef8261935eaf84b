"""Attention in a search step: PyTorch's fused kernel, the written-out maths, and one scaled product.

A search step gives every row (sentence x beam) one query. Its self-attention reads the row's own
keys so far, with no mask; its cross-attention lets the K beams of a sentence (its rows, G = K)
read the sentence's source together, with the source's padding mask. This times, at those
shapes, with the small preset's heads (4 x 32), under inference_mode as search runs:

- fused: F.scaled_dot_product_attention (a bool mask for the source)
- written out: model.attention, softmax(Q K^T / sqrt(Dh)) V, the mask by masked_fill
- one scaled product: model.batched_attention, where torch.baddbmm computes Q K^T / sqrt(Dh)
  plus the mask as added scores (0 or -inf, made once per search) in one call

Usage: python bench/attention_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record  # noqa: E402

from tinytrans.model import attention, batched_attention, mask_as_scores  # noqa: E402

HEADS, HEAD_SIZE = 4, 32
BEAM = 5
SHAPES = [(1, 10), (32, 20), (160, 5), (160, 20), (160, 40)]  # (sentences, keys)


def milliseconds(fn, seconds: float = 0.5) -> float:
    fn()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return (time.perf_counter() - start) / count * 1e3


def timings(q, k, v, mask) -> tuple[float, float, float]:
    added = None if mask is None else mask_as_scores(mask, k.size(1), k.dtype)
    fused = milliseconds(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    written = milliseconds(lambda: attention(q, k, v, mask))
    product = milliseconds(lambda: batched_attention(q, k, v, added))
    return fused, written, product


@torch.inference_mode()
def main() -> None:
    rows = ["| threads | attention | sentences x beam | keys | fused (ms) | written out (ms) | "
            "one scaled product (ms) |", "|---|---|---|---|---|---|---|"]
    generator = torch.Generator().manual_seed(0)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for sentences, n_keys in SHAPES:
            R = sentences * BEAM
            keys = lambda n: torch.randn(n, HEADS, n_keys, HEAD_SIZE, generator=generator)  # noqa: E731
            # self-attention: one query per row against its own keys, no mask
            q = torch.randn(R, HEADS, 1, HEAD_SIZE, generator=generator)
            figures = timings(q, keys(R), keys(R), None)
            rows.append(f"| {threads} | self | {sentences} x {BEAM} | {n_keys} | "
                        + " | ".join(f"{f:.3f}" for f in figures) + " |")
            # cross-attention: the beams of a sentence against its source, padded
            q = torch.randn(sentences, HEADS, BEAM, HEAD_SIZE, generator=generator)
            padding = torch.ones(sentences, 1, 1, n_keys, dtype=torch.bool)
            padding[::3, ..., -2:] = False  # a third of the sources end in padding
            figures = timings(q, keys(sentences), keys(sentences), padding)
            rows.append(f"| {threads} | cross | {sentences} x {BEAM} | {n_keys} | "
                        + " | ".join(f"{f:.3f}" for f in figures) + " |")
    rows.append(f"\n- {HEADS} heads of {HEAD_SIZE}, fp32; 1 x {BEAM} = one sentence, 160 x {BEAM} = "
                "a 12,000-token batch of Multi30k sentences; the cross-attention's K beams of a "
                "sentence query its source together (as the search does since the beams share it)")
    record("Attention in a search step: fused kernel, written out, one scaled product", rows)


if __name__ == "__main__":
    main()
