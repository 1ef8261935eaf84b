"""Where a training step's time goes, operator by operator (torch.profiler, CPU).

Two models, each on Multi30k en-de with its own batches:

- the throughput bench's (bench/train_speed.py): 3+3 x d256, FFN 1024, 4 heads, joint 8k
  vocabulary, ~4096-token batches, dropout 0.1 on embeddings, residuals, attention weights and
  FFN activations;
- the small preset's: 4+4 x d128, FFN 512, 4 heads, joint 8k vocabulary, 3000-token batches,
  dropout 0.1 on embeddings and residuals.

Operators are grouped by name (self time, so nothing is counted twice): matrix products (mm, addmm,
bmm), the fused attention kernel, dropout's masks, the softmax and loss over the vocabulary, layer
normalisation, the optimizer with gradient clipping, and the rest (element-wise adds, ReLU, copies,
bias gradients). The share of the matrix products bounds what removing everything else could
give: tokens/s divided by that share.

Usage: python bench/train_profile.py [updates to profile, default 10]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record  # noqa: E402
from train_speed import VOCAB, matmul_rate, multi30k_corpus  # noqa: E402

from tinytrans.config import build_config  # noqa: E402
from tinytrans.data import length_sorted_batches, make_batch  # noqa: E402
from tinytrans.hardware import keep_freed_memory  # noqa: E402
from tinytrans.model import Transformer  # noqa: E402
from tinytrans.schedule import make_optimizer  # noqa: E402
from tinytrans.train import Timings, train_step  # noqa: E402

MODELS = {  # name: (model keys, batch tokens)
    "3+3 x d256, full dropout (train_speed.py)": (
        {"dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1}, 4096),
    "4+4 x d128, small preset": (
        {"d_model": 128, "d_ff": 512, "n_encoder_layers": 4, "n_decoder_layers": 4,
         "dropout": 0.1}, 3000),
}
GROUPS = {  # group: operator names (self time)
    "matrix products": {"aten::mm", "aten::addmm", "aten::bmm"},
    "dropout masks": {"aten::random_", "aten::lt", "aten::where", "aten::bernoulli_"},
    "softmax and loss over the vocabulary": {
        "aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::exp", "aten::exp_",
        "aten::sub", "aten::sub_", "aten::mean", "aten::gather", "aten::scatter_add_",
        "aten::_softmax", "aten::_softmax_backward_data"},
    "layer norm": {"aten::native_layer_norm", "aten::native_layer_norm_backward"},
    "optimizer and clipping": {"aten::_fused_adam_", "aten::linalg_vector_norm",
                               "aten::_foreach_norm", "aten::_foreach_mul_"},
}


def group_of(name: str) -> str:
    if "scaled_dot_product" in name:
        return "fused attention kernel"
    return next((group for group, names in GROUPS.items() if name in names), "the rest")


def profile_model(corpus, keys: dict, batch_tokens: int,
                  updates: int) -> tuple[float, dict[str, float]]:
    """Target tokens/s over `updates` timed updates, and the share of each group in a profile of
    as many more."""
    batches = length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, batch_tokens, 1, 0)
    torch.manual_seed(1)
    cfg = build_config({"model": {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB, **keys}})
    model = Transformer(cfg.model)
    optimizer = make_optimizer(model, cfg)

    def step(indices) -> int:
        batch = make_batch(corpus, indices)
        train_step(model, [batch], optimizer, cfg, 1e-4, torch.device("cpu"), "fp32", Timings())
        return batch.n_tgt_tokens

    for indices in batches[:3]:  # warm-up: allocator, thread pools
        step(indices)
    start = time.perf_counter()
    tokens = sum(step(indices) for indices in batches[3: 3 + updates])
    rate = tokens / (time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for indices in batches[3 + updates: 3 + 2 * updates]:
            step(indices)
    totals: dict[str, float] = {}
    for event in profiler.key_averages():
        group = group_of(event.key)
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total
    everything = sum(totals.values())
    return rate, {group: value / everything for group, value in totals.items()}


def main() -> None:
    updates = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    corpus = multi30k_corpus()
    keep_freed_memory()  # as `tinytrans train` does
    rate = matmul_rate()
    order = ["matrix products", "fused attention kernel", "dropout masks",
             "softmax and loss over the vocabulary", "layer norm", "optimizer and clipping",
             "the rest"]
    rows = ["| model | target tokens/s | / R | " + " | ".join(order)
            + " | tokens/s if only the products were left |",
            "|---|---|---|" + "---|" * len(order) + "---|"]
    for name, (keys, batch_tokens) in MODELS.items():
        tokens_per_second, shares = profile_model(corpus, keys, batch_tokens, updates)
        cells = " | ".join(f"{shares.get(group, 0.0):.1%}" for group in order)
        ceiling = tokens_per_second / shares["matrix products"]
        rows.append(f"| {name} | {tokens_per_second:,.0f} | {tokens_per_second / rate:.1f} | "
                    f"{cells} | {ceiling:,.0f} ({ceiling / rate:.1f} x R) |")
        print(rows[-1], flush=True)
    rows += ["", "- R: fp32 products at the d256 model's shapes (train_speed.py), "
             f"{rate:.0f} GFLOP/s in this run; "
             f"{updates} updates timed, then {updates} more profiled (self CPU time by operator)",
             "- x R is the issue's measure for the d256 model (about 45 MFLOP per target token, "
             "ceiling 22 x R); the d128 model does fewer FLOPs per token, so its x R is not "
             "comparable; the profiler's own cost falls mostly on the many small operators"]
    record("Training step by operator (torch.profiler), Multi30k en-de, fp32, 2 threads", rows)


if __name__ == "__main__":
    main()
