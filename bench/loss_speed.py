"""Speed of the label-smoothed loss: tinytrans' autograd function against F.cross_entropy.

Forward and backward on fp32 logits the size of a training batch's output layer (3,000 target
tokens x 6,000 and 8,000 pieces: the small preset's vocabulary and a larger one), 2 threads.
Three ways, each returning what training needs:

- fused: tinytrans.loss.fused_smoothed_loss (smoothed loss and NLL, hand-written backward)
- torch: tinytrans.loss.torch_smoothed_loss (F.cross_entropy with label_smoothing, plus the
  NLL for the log as a second, gradient-free F.cross_entropy)
- F.cross_entropy alone: the smoothed loss only, the least any implementation must do

Repetitions are interleaved (fused, torch, alone, fused, ...) so a change in the load of this
shared machine hits all three alike; the median of each is reported.

Usage: python bench/loss_speed.py [--repeats N] [--record]
  (without --record the figures are only printed; with it they are appended to RESULTS.md)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record  # noqa: E402

from tinytrans.loss import fused_smoothed_loss, torch_smoothed_loss  # noqa: E402

EPSILON = 0.1


def cross_entropy_alone(logits: torch.Tensor, target: torch.Tensor, epsilon: float):
    return F.cross_entropy(logits, target, label_smoothing=epsilon, reduction="sum"), None


WAYS = {"fused": fused_smoothed_loss, "torch": torch_smoothed_loss,
        "F.cross_entropy alone": cross_entropy_alone}


def one_call(way, logits: torch.Tensor, target: torch.Tensor) -> float:
    """Seconds for one forward + backward, as train_step does them."""
    logits.grad = None
    start = time.perf_counter()
    loss, _ = way(logits, target, EPSILON)
    (loss / len(target)).backward()
    return time.perf_counter() - start


def measure(tokens: int, vocab: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each way, on one random (tokens x vocab) problem."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(tokens, vocab, generator=generator).requires_grad_()  # (N, V)
    target = torch.randint(0, vocab, (tokens,), generator=generator)  # (N,)
    times: dict[str, list[float]] = {name: [] for name in WAYS}
    for repeat in range(repeats + 2):
        for name, way in WAYS.items():
            seconds = one_call(way, logits, target)
            if repeat >= 2:  # the first two calls allocate and warm caches
                times[name].append(seconds)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--vocab", type=int, nargs="+", default=[6000, 8000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="append the figures to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["| vocabulary | implementation | ms per forward+backward (median) | vs fused |",
             "|---|---|---|---|"]
    for vocab in args.vocab:
        ms = measure(args.tokens, vocab, args.repeats)
        for name, value in ms.items():
            lines.append(f"| {vocab:,} | {name} | {value:.1f} | {value / ms['fused']:.2f}x |")
    lines += ["", (f"- {args.tokens:,} target tokens, fp32, label smoothing {EPSILON}, "
                   f"{args.repeats} interleaved repetitions, {args.threads} threads")]
    if args.record:
        record(f"Label-smoothed loss, {args.tokens:,} tokens, forward + backward", lines)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
