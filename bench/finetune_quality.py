"""Fine-tuning on a new domain: test BLEU on both domains before and after a few minutes of
`tinytrans train --init`.

    python bench/finetune_quality.py                          # Multi30k captions -> bundled corpus
    python bench/finetune_quality.py bundled-to-multi30k      # the reverse
    python bench/finetune_quality.py --minutes 10             # a longer fine-tuning
    python bench/finetune_quality.py -- --lr 1e-3 --warmup-steps 50   # flags after -- go to train

The base model is the run bench/train_quality.py trains for the old domain (bench/work/quality-
multi30k, preset small, 20 minutes; or bench/work/quality-tiny, preset tiny, 5.5 minutes on the
bundled corpus), reused when it is there and trained (and recorded) the same way when it is not;
`--retrain-base` trains it again. The base is fine-tuned on the new domain's training data for
`--minutes` (default 5) with its own recipe otherwise (train --init keeps the base's settings as
defaults: the small preset's learning rate decays linearly to zero at the new time limit), and
validated on the new domain's validation set, first before any update. Then both models are
scored on both test sets (beam 5, checkpoint best): the gain on the new domain, and what the
old domain loses (catastrophic forgetting).

The bundled corpus is synthetic and narrow (one grammar, a few hundred words), Multi30k is image
captions: the two share a language pair and little else. Fine-tuned the other way, the bundled
model keeps its 1,000-piece tokenizer, made for those few hundred words: Multi30k's words fall
into many small pieces (characters it never saw, into unknown ones), which bounds what
fine-tuning can reach.

Duration on 2 CPU cores: with the base run already trained, about 8 minutes (the fine-tuning's
minutes, four beam-5 evaluations of 1,000 sentences, encoding 30,000 training pairs); add 20
minutes to train the Multi30k base (5.5 for the bundled one). Training and evaluation run as child
processes through the real CLI (with bench/train_quality.py's helpers), so the figures are a
user's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, record  # noqa: E402
from train_quality import SETUPS, run, run_dir_for, train_and_record  # noqa: E402

# direction -> (old domain, new domain), as bench/train_quality.py names its setups
DIRECTIONS = {"multi30k-to-bundled": ("multi30k", "tiny"),
              "bundled-to-multi30k": ("tiny", "multi30k")}
DOMAIN_NAMES = {"multi30k": "Multi30k", "tiny": "bundled"}
BEAM = 5


def base_run(old: str, retrain: bool) -> tuple[Path, bool]:
    """The old domain's model, as bench/train_quality.py trains it (and records its training),
    and whether it was trained now."""
    run_dir = run_dir_for(old, [])
    train_now = retrain or not (run_dir / "checkpoints" / "best.safetensors").is_file()
    if train_now:
        train_and_record(old, SETUPS[old](), run_dir, [])
    return run_dir, train_now


def fine_tune(base: Path, new: dict, run_dir: Path, minutes: float, extra: list[str]) -> float:
    """Fine-tune `base` on the new domain for `minutes`; return the wall time in seconds."""
    start = time.perf_counter()
    run(["train", "--init", str(base), "--train", str(new["train"]), "--valid", str(new["valid"]),
         "--src", "en", "--tgt", "de", "--max-time", str(minutes), "--output", str(run_dir),
         "--overwrite", "--quiet", *extra])
    return time.perf_counter() - start


def scores_on(run_dir: Path, prefix: Path) -> dict:
    """BLEU, chrF and TER (with signatures) of a run's best checkpoint on a test set."""
    out = run(["evaluate", "--model", str(run_dir), "--test", str(prefix), "--src", "en", "--tgt",
               "de", "--beam", str(BEAM), "--checkpoint", "best", "--json"])
    return json.loads(out.strip().splitlines()[-1])


def metrics(run_dir: Path, event: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    """This script's options, and the train flags after `--`."""
    split = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("direction", nargs="?", choices=DIRECTIONS, default="multi30k-to-bundled")
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="fine-tuning time (train --max-time)")
    parser.add_argument("--retrain-base", action="store_true", help="train the base run again")
    return parser.parse_args(sys.argv[1:split]), sys.argv[split + 1:]


def main() -> None:
    args, extra = parse_args()
    old, new = DIRECTIONS[args.direction]
    domains = {name: SETUPS[name]() for name in (old, new)}  # exits when Multi30k is missing
    base, trained_now = base_run(old, args.retrain_base)
    suffix = re.sub(r"[^A-Za-z0-9._=-]+", "-", "_".join(a.lstrip("-") for a in extra))
    tuned = WORK / (f"finetune-{args.direction}-{args.minutes:g}min"
                    + (f"_{suffix}" if suffix else ""))
    wall = fine_tune(base, domains[new], tuned, args.minutes, extra)

    scores = {(model, name): scores_on(model, domains[name]["test"])
              for model in (base, tuned) for name in (new, old)}
    columns = [f"{DOMAIN_NAMES[new]} (new) test BLEU", f"{DOMAIN_NAMES[old]} (old) test BLEU",
               f"{DOMAIN_NAMES[new]} chrF", f"{DOMAIN_NAMES[old]} chrF"]
    rows = [f"| model | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    after = f"fine-tuned {args.minutes:g} min (after)"
    for label, model in (("base (before)", base), (after, tuned)):
        bleu = [scores[(model, name)]["bleu"] for name in (new, old)]
        chrf = [scores[(model, name)]["chrf"] for name in (new, old)]
        rows.append(f"| {label} | " + " | ".join(f"{x:.2f}" for x in bleu + chrf) + " |")
    change = [scores[(tuned, name)]["bleu"] - scores[(base, name)]["bleu"] for name in (new, old)]
    rows.append(f"| change | {change[0]:+.2f} | {change[1]:+.2f} (forgetting) | | |")

    origin = metrics(tuned, "start")[0]["init"]
    logs = metrics(tuned, "log")
    updates = max((r["step"] for r in logs + metrics(tuned, "valid")), default=0)
    curve = ", ".join(f"{v['step']}: {v['bleu']:.2f}" for v in metrics(tuned, "valid"))
    rows += ["",
             (f"- base: {base} ({'trained by this command' if trained_now else 'reused'}; "
              f"checkpoint {Path(origin['checkpoint']).name}, step {origin['step']}, sha256 "
              f"{origin['sha256'][:12]}); fine-tuned run: {tuned}"),
             (f"- fine-tuning: {updates} updates in {args.minutes:g} "
              f"minutes ({wall:.0f} s wall with data encoding and validations); train flags: "
              f"{' '.join(extra) or '(the base run recipe)'}"),
             (f"- {DOMAIN_NAMES[new]} validation BLEU (greedy) by step, 0 = the base before any "
              f"update: {curve}"),
             (f"- test scores: beam {BEAM}, checkpoint best (chosen on the new domain's validation "
              f"set, the base's own weights included); BLEU signature "
              f"`{scores[(tuned, new)]['signatures']['bleu']}`")]
    record(f"Fine-tuning {DOMAIN_NAMES[old]} -> {DOMAIN_NAMES[new]} ({args.minutes:g} minutes)",
           rows)


if __name__ == "__main__":
    main()
