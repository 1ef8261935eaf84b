"""Is `--precision auto` right on this CPU? Its verdict against what training measures.

    python bench/precision_check.py            # tiny and small presets, ~3 minutes
    python bench/precision_check.py base       # also the base preset (4,096-token batches)
    python bench/precision_check.py --translate RUN   # translation: auto's verdict for RUN's
                                                      # model against decoding Multi30k's test set

For each preset's model: what auto says bf16 autocast is worth against fp32 (train.updates_probe:
real updates on the run's batches, both ways, from a cold cache), three times, how long each
took, and what training itself measures: target tokens/s of N real training updates
(tinytrans.train.train_step) in fp32 and in bf16 on the same batches, in alternating rounds
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
from tinytrans.hardware import autocast, keep_freed_memory, pick_precision  # noqa: E402
from tinytrans.model import Transformer  # noqa: E402
from tinytrans.textio import read_parallel  # noqa: E402
from tinytrans.tokenizer import Tokenizer, train_tokenizer  # noqa: E402
from tinytrans.schedule import make_optimizer  # noqa: E402
from tinytrans.train import Timings, _precision_work, train_step, updates_probe  # noqa: E402

ROUNDS = 2
VERDICTS = 3  # auto's verdict, each from a cold cache: how much it varies
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
    """The preset's model config (vocabulary from a tokenizer trained on the bundled corpus), the
    bundled training corpus encoded, and its first batches."""
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
    return cfg, corpus, [make_batch(corpus, b) for b in batches[:UPDATES[name] + 2]]


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


def translation_rows(run_dir: Path) -> list[str]:
    """auto's verdict for translating with the model of `run_dir` (translate.decoding_probe,
    from a cold cache) against beam 5 over Multi30k's test set in fp32 and in bf16, alternating
    (the same model, the same sentences, the same search; only the autocast differs)."""
    from common import multi30k_test_set
    from tinytrans.config import SearchConfig
    from tinytrans.translate import Translator
    source, _ = multi30k_test_set()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TINYTRANS_CACHE_DIR"] = cache
        start = time.perf_counter()
        choice = Translator(run_dir, "best", "cpu", "auto").precision_choice
        seconds = time.perf_counter() - start
    translators = {p: Translator(run_dir, "best", "cpu", p) for p in ("fp32", "bf16")}
    rate = {"fp32": 0.0, "bf16": 0.0}
    for _ in range(ROUNDS):
        for precision, translator in translators.items():
            start = time.perf_counter()
            list(translator.translate(source, SearchConfig(beam=5)))
            rate[precision] = max(rate[precision], len(source) / (time.perf_counter() - start))
    return ["", f"Translation, {run_dir}: auto's verdict {choice.speedup:.2f}x (load and measure "
            f"{seconds:.1f} s) -> {choice.precision}; beam 5 over Multi30k test_2016_flickr: fp32 "
            f"{rate['fp32']:.0f} sentences/s, bf16 {rate['bf16']:.0f} "
            f"({rate['bf16'] / rate['fp32']:.2f}x), best of {ROUNDS} alternating rounds"]


def main() -> None:
    keep_freed_memory()  # as the CLI does
    if "--translate" in sys.argv:
        run_dir = Path(sys.argv[sys.argv.index("--translate") + 1])
        record("Precision: auto's verdict for translation against decoding in fp32 and bf16",
               translation_rows(run_dir))
        return
    presets = ("tiny", "small") + (("base",) if "base" in sys.argv[1:] else ())
    rows = [f"- matrix products at 2048^3: fp32 {matmul_rate('fp32'):.0f} GFLOP/s, "
            f"bf16 autocast {matmul_rate('bf16'):.0f} GFLOP/s", "",
            f"| preset | auto's verdict: bf16 / fp32 ({VERDICTS} cold caches) | its time | auto "
            "picks | training fp32 tok/s | training bf16 tok/s | training bf16 / fp32 | auto "
            "right? |", "|---|---|---|---|---|---|---|---|"]
    cpu = torch.device("cpu")
    for name in presets:
        cfg, corpus, batches = preset_batches(name)
        verdicts, seconds = [], []
        for _ in range(VERDICTS):
            with tempfile.TemporaryDirectory() as cache:
                os.environ["TINYTRANS_CACHE_DIR"] = cache
                start = time.perf_counter()
                choice = pick_precision("auto", cpu, updates_probe(cfg, corpus, cpu),
                                        _precision_work(cfg, corpus))
                seconds.append(time.perf_counter() - start)
                verdicts.append(choice)
        measured = {"fp32": [], "bf16": []}
        for _ in range(ROUNDS):
            for precision in ("fp32", "bf16"):
                measured[precision].append(tokens_per_second(cfg, batches, precision))
        fp32, bf16 = max(measured["fp32"]), max(measured["bf16"])
        # right: bf16 where training is clearly faster (auto's own 1.2x), fp32 where it is
        # slower; in between either is fine ("margin")
        ratio = bf16 / fp32
        picks = [v.precision for v in verdicts]
        right = "margin" if 1.0 <= ratio < 1.2 else \
            "yes" if all((p == "bf16") == (ratio >= 1.2) for p in picks) else "NO"
        rows.append(f"| {name} | {', '.join(f'{v.speedup:.2f}x' for v in verdicts)} | "
                    f"{', '.join(f'{t:.1f}' for t in seconds)} s | {', '.join(picks)} | "
                    f"{fp32:,.0f} | {bf16:,.0f} | {ratio:.2f}x | {right} |")
        print(rows[-1], flush=True)
    rows += ["", f"- updates per measurement on the bundled corpus {UPDATES}, best of {ROUNDS} "
             f"alternating rounds (vocabularies at most 4,000: the corpus holds no more; base with "
             f"{BASE_BATCH_TOKENS}-token batches); auto's trial: train.PRECISION_TRIAL_UPDATES "
             "real updates both ways on the corpus's batches, a throwaway model"]
    record("Precision: auto's verdict (real updates) against training in fp32 and bf16", rows)


if __name__ == "__main__":
    main()
