"""Attention for one query: PyTorch's fused kernel against the written-out maths.

A search step gives every row (sentence x beam) one query against the keys so far (decoder
self-attention, no mask) or against the source (cross-attention, padding mask). This times
F.scaled_dot_product_attention and model.attention (softmax(Q K^T / sqrt(Dh)) V) at those shapes,
with the small preset's heads (4 x 32), under inference_mode as search runs.

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

from tinytrans.model import attention  # noqa: E402

HEADS, HEAD_SIZE = 4, 32


def milliseconds(fn, seconds: float = 1.0) -> float:
    fn()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return (time.perf_counter() - start) / count * 1e3


@torch.inference_mode()
def main() -> None:
    rows = ["| rows | keys | mask | fused kernel (ms) | written out (ms) | speed-up |",
            "|---|---|---|---|---|---|"]
    generator = torch.Generator().manual_seed(0)
    for n_rows, n_keys in [(160, 20), (800, 5), (800, 20), (800, 40)]:
        q = torch.randn(n_rows, HEADS, 1, HEAD_SIZE, generator=generator)
        k = torch.randn(n_rows, HEADS, n_keys, HEAD_SIZE, generator=generator)
        v = torch.randn(n_rows, HEADS, n_keys, HEAD_SIZE, generator=generator)
        padding = torch.ones(n_rows, 1, 1, n_keys, dtype=torch.bool)
        padding[::3, ..., -2:] = False  # a third of the rows end in padding
        for mask in (None, padding):
            fused = milliseconds(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
            written = milliseconds(lambda: attention(q, k, v, mask))
            rows.append(f"| {n_rows} | {n_keys} | {'padding' if mask is not None else 'none'} | "
                        f"{fused:.3f} | {written:.3f} | {fused / written:.2f}x |")
    rows.append(f"\n- one query per row, {HEADS} heads of {HEAD_SIZE}, fp32, "
                f"{torch.get_num_threads()} threads; 160 rows = 32 sentences x beam 5, "
                "800 = a 12,000-token batch of Multi30k sentences x beam 5")
    record("Attention for one query (a search step), fused kernel vs written out", rows)


if __name__ == "__main__":
    main()
