"""Where a search's time goes: each part of the search loop timed while it translates.

    python bench/search_profile.py [RUN_DIR] [--threads N]

The Multi30k test set (1,000 sentences) in batches as `translate` makes them, and one sentence at
a time (the first 200, as a user typing), beam 5 and greedy, with timers around the parts of
search_loop.run_search: the encoder, the decoder step's layers (self-attention, cross-attention,
feed-forward), the output layer, the log-softmax and masks (what next_log_probs adds to the
two before it), the strategy's choice, the rows following their parents (cache reordering), and
the rest (batching, tokenization, line handling, and the loop itself). A timer costs about a
microsecond a call; the total is timed without them. Uses the model of `python
bench/train_quality.py multi30k` unless RUN_DIR is given; fp32, the better of two rounds.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, multi30k_test_set, record  # noqa: E402

import torch  # noqa: E402

from tinytrans import search_loop  # noqa: E402
from tinytrans.config import SearchConfig  # noqa: E402
from tinytrans.search import Beam, Greedy  # noqa: E402
from tinytrans.translate import Translator  # noqa: E402

ROUNDS = 2
ONE_AT_A_TIME = 200


class Timers:
    """Seconds spent inside wrapped callables, by part."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, function, part: str):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start
        return timed


def instrument(model, timers: Timers) -> None:
    """Timers around the model's and the loop's parts (instance and module attributes: the
    code itself is unchanged)."""
    model.encode = timers.wrap(model.encode, "encoder")
    model.step_logits = timers.wrap(model.step_logits, "output layer")
    for layer in model.decoder_layers:
        layer.self_attn.step = timers.wrap(layer.self_attn.step, "self-attention")
        layer.cross_attn.step = timers.wrap(layer.cross_attn.step, "cross-attention")
        layer.feed_forward.step = timers.wrap(layer.feed_forward.step, "feed-forward")
    model.decode_step = timers.wrap(model.decode_step, "decoder step")
    search_loop.next_log_probs = timers.wrap(search_loop.next_log_probs, "next_log_probs")
    search_loop.follow = timers.wrap(search_loop.follow, "follow (reorder)")
    for strategy in (Beam, Greedy):
        strategy.choose = timers.wrap(strategy.choose, "strategy's choice")


def parts(seconds: dict[str, float], total: float) -> dict[str, float]:
    """The timed parts as the table shows them: nested timers turned into exclusive ones."""
    layers = seconds["self-attention"] + seconds["cross-attention"] + seconds["feed-forward"]
    return {
        "encoder": seconds["encoder"],
        "self-attention": seconds["self-attention"],
        "cross-attention": seconds["cross-attention"],
        "feed-forward": seconds["feed-forward"],
        "rest of the decoder step (embedding, norms, residuals)": seconds["decoder step"] - layers,
        "output layer": seconds["output layer"],
        "log-softmax and masks": seconds["next_log_probs"] - seconds["decoder step"] - seconds["output layer"],
        "strategy's choice": seconds["strategy's choice"],
        "follow (reorder)": seconds["follow (reorder)"],
        "everything else": total - seconds["encoder"] - seconds["next_log_probs"]
        - seconds["strategy's choice"] - seconds["follow (reorder)"],
    }


def profile(translator: Translator, timers: Timers, lines: list[str], cfg: SearchConfig,
            one_at_a_time: bool) -> tuple[float, dict[str, float]]:
    """The better of ROUNDS rounds: (total seconds, seconds by part)."""
    best = None
    for _ in range(ROUNDS):
        timers.seconds.clear()
        start = time.perf_counter()
        if one_at_a_time:
            for line in lines:
                list(translator.translate([line], cfg, chunk_lines=1))
        else:
            list(translator.translate(lines, cfg))
        total = time.perf_counter() - start
        if best is None or total < best[0]:
            best = (total, parts(timers.seconds, total))
    return best


def main() -> None:
    args = sys.argv[1:]
    threads = 1
    if "--threads" in args:
        at = args.index("--threads")
        threads = int(args[at + 1])
        args = args[:at] + args[at + 2:]
    run_dir = Path(args[0]) if args else WORK / "quality-multi30k"
    source, _ = multi30k_test_set()
    translator = Translator(run_dir, "best", "cpu", "fp32", threads=threads)
    timers = Timers()
    instrument(translator.model, timers)
    columns = []
    for beam in (5, 1):
        cfg = SearchConfig(beam=beam)
        list(translator.translate(source[:50], cfg))  # warm-up
        for one in (False, True):
            lines = source[:ONE_AT_A_TIME] if one else source
            total, by_part = profile(translator, timers, lines, cfg, one)
            what = f"{'beam 5' if beam == 5 else 'greedy'}, {'one sentence at a time' if one else 'test set'}"
            unit = 1000 / len(lines) if one else 1.0  # ms per sentence, or seconds in all
            columns.append((what, total * unit, {k: v * unit for k, v in by_part.items()}, total))
    names = list(columns[0][2])
    rows = ["| part | " + " | ".join(c[0] for c in columns) + " |",
            "|---|" + "---|" * len(columns)]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(f"{c[2][name]:.2f} ({100 * c[2][name] / c[1]:.0f}%)"
                                                 for c in columns) + " |")
    rows.append("| **total** | " + " | ".join(f"**{c[1]:.2f}**" for c in columns) + " |")
    rows += ["", f"- model {run_dir.name}, fp32, {threads} thread(s), torch {torch.__version__}; test set: "
             f"seconds for all 1,000 sentences; one at a time: ms per sentence over the first "
             f"{ONE_AT_A_TIME}; the better of {ROUNDS} rounds, timers on (about 1 µs a call)"]
    record(f"Where a search's time goes ({threads} thread{'s' if threads > 1 else ''})", rows)


if __name__ == "__main__":
    main()
