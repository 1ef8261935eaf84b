"""Where a search step's time goes, and the output layer read three ways, on the Multi30k model.

    python bench/decoder_step.py [RUN_DIR]

1. The output layer's product for R rows (a search step's rows: 1, 5, 25, 160 and a big
   batch's 2,500), as F.linear reads the (V, D) matrix, as a (D, V) copy is read along its rows,
   and in oneDNN's layout (model.StepOutputMatrix): microseconds per product, median of 7 runs
   of 200, at 1 and 2 threads. Same inputs; the largest difference from F.linear is printed.
2. One sentence at a time (beam 5, the first 60 test sentences, one thread, after 10 to warm
   up): microseconds per step in the decoder layers, the output layer, the log-softmax, and
   everything else (the strategy, the loop, the encoder, the line handling), timed around the
   parts of search_loop.next_log_probs.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, multi30k_test_set, record  # noqa: E402

from tinytrans import search_loop  # noqa: E402
from tinytrans.config import SearchConfig  # noqa: E402
from tinytrans.hardware import keep_freed_memory  # noqa: E402
from tinytrans.translate import Translator  # noqa: E402


def microseconds(product, repeats: int = 200) -> float:
    for _ in range(20):
        product()
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(repeats):
            product()
        runs.append((time.perf_counter() - start) / repeats * 1e6)
    return statistics.median(runs)


def output_layer_rows(translator: Translator) -> list[str]:
    """The product three ways: F.linear on (V, D), a (D, V) copy, oneDNN's reordered layout
    (what step_logits uses where PyTorch has oneDNN: StepOutputMatrix)."""
    model = translator.model
    weight = model.embedding.weight if model.output_projection is None else model.output_projection.weight
    weight = weight.detach()
    transposed = weight.t().contiguous()
    onednn = torch.ops.mkldnn._reorder_linear_weight(weight)
    ways = {"F.linear (V, D)": lambda x: F.linear(x, weight),
            "(D, V) copy": lambda x: x @ transposed,
            "oneDNN layout": lambda x: torch.ops.mkldnn._linear_pointwise(x, onednn, None, "none", [], "")}
    rows = ["| threads | rows | " + " | ".join(f"{name}, us" for name in ways)
            + " | oneDNN vs copy | largest difference |", "|---|---|" + "---|" * (len(ways) + 2)]
    with torch.inference_mode():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for n in (1, 5, 25, 160, 2500):
                states = torch.randn(n, weight.size(1), generator=torch.Generator().manual_seed(n))
                times = [microseconds(lambda: way(states), 20 if n > 100 else 200) for way in ways.values()]
                gap = max((way(states) - F.linear(states, weight)).abs().max().item() for way in ways.values())
                rows.append(f"| {threads} | {n} | " + " | ".join(f"{s:.0f}" for s in times)
                            + f" | {times[1] / times[2]:.2f}x | {gap:.1e} |")
    return rows


def step_parts(translator: Translator) -> list[str]:
    torch.set_num_threads(1)
    parts = {"decoder layers": 0.0, "output layer": 0.0, "log-softmax and masks": 0.0}
    steps = 0

    def timed_step(model, last, memory, src_mask, cache):
        nonlocal steps
        a = time.perf_counter()
        states = model.decode_step(last, memory, src_mask, cache)
        b = time.perf_counter()
        logits = model.step_logits(states)
        c = time.perf_counter()
        log_probs = logits.float().log_softmax(dim=-1)
        log_probs[:, 0] = log_probs[:, 2] = float("-inf")  # PAD and BOS, as next_log_probs
        d = time.perf_counter()
        parts["decoder layers"] += b - a
        parts["output layer"] += c - b
        parts["log-softmax and masks"] += d - c
        steps += 1
        return log_probs

    source, _ = multi30k_test_set()
    cfg = SearchConfig(beam=5)
    original = search_loop.next_log_probs
    search_loop.next_log_probs = timed_step
    try:
        for line in source[:10]:
            list(translator.translate([line], cfg, chunk_lines=1))
        parts.update({k: 0.0 for k in parts})
        steps = 0
        start = time.perf_counter()
        for line in source[:60]:
            list(translator.translate([line], cfg, chunk_lines=1))
        total = time.perf_counter() - start
    finally:
        search_loop.next_log_probs = original
    rows = ["| part of a step | us per step | share |", "|---|---|---|"]
    for name, seconds in parts.items():
        rows.append(f"| {name} | {seconds / steps * 1e6:.0f} | {seconds / total:.0%} |")
    rest = total - sum(parts.values())
    rows.append(f"| everything else | {rest / steps * 1e6:.0f} | {rest / total:.0%} |")
    rows.append(f"| one sentence, ms | {total / 60 * 1000:.1f} | {steps / 60:.1f} steps |")
    return rows


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else WORK / "quality-multi30k"
    keep_freed_memory()  # as the CLI does
    translator = Translator(run_dir, "best", "cpu", "fp32", threads=1)
    rows = output_layer_rows(translator) + [""] + step_parts(translator)
    model = translator.config.model
    rows += ["", f"- model: {run_dir} (d_model {model.d_model}, vocabulary {model.tgt_vocab_size}, "
             f"{model.n_decoder_layers} decoder layers), fp32; products: median of 7 runs; "
             "the step's parts: one sentence at a time, beam 5, first 60 test sentences, 1 thread"]
    record("Decoder step: the output layer read three ways, and where a step's time goes", rows)


if __name__ == "__main__":
    main()
