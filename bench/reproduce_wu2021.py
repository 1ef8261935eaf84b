"""Reproduce Wu et al. (2021)'s Transformer-tiny on Multi30k en-de: BLEU 41.02 on test_2016_flickr.

    python bench/reproduce_wu2021.py train       # resumable: after a kill, run it again to go on
    python bench/reproduce_wu2021.py evaluate    # test_2016_flickr, scored their way; RESULTS.md
    python bench/reproduce_wu2021.py train --label-smoothing 0.1    # one change: its own run

A variant that changes only a limit (--patience, --max-steps) may go on from the recipe's run
instead of starting again: copy bench/work/wu2021 to the variant's directory first (for
`train --patience 1000`: bench/work/wu2021_patience_1000), and it resumes where that run stopped.

Their recipe (README-baseline.md of LividWo/Revisit-MMT) is bench/wu2021.toml, key by key. Their
data is the dataset's own lowercased, normalised, Moses-tokenized text (../shared/corpora/
multi30k/tok), and their score fairseq's BLEU on that text after removing BPE: corpus BLEU with
no further tokenization, which is sacrebleu's tokenize="none". A SentencePiece model trained on
tokenized text gives the tokenized text back when it decodes, so the hypotheses are scored as
they come out of `tinytrans translate`.

fairseq validates, saves a checkpoint and counts --patience once per epoch; this script sets
validate_every and checkpoint_every to one epoch's updates, counted from the batches this
toolkit makes of the training text (the padded-token rule of fairseq's --max-tokens; fairseq
also rounds each batch down to a multiple of 8 sentences, --required-batch-size-multiple, which
makes its batches 1-2% smaller: not copied). Their evaluate.sh averages the last 10 epoch
checkpoints and generates with beam 5, length penalty 1 and fairseq's length limit (200 pieces,
whatever the source). Placeholders (numbers replaced before the model) are off: their model saw
the text as it is.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, WORK, matmul_gflops, record, require_multi30k  # noqa: E402

RECIPE = ROOT / "bench" / "wu2021.toml"
THEIRS = {"bleu": 41.02, "precisions": [71.0, 47.5, 34.3, 24.5], "bp": 0.999,
          "sys_len": 12096, "ref_len": 12103}


def tok_dir() -> Path:
    return require_multi30k() / "tok"


def run_dir_for(extra: list[str]) -> Path:
    """bench/work/wu2021, or wu2021_FLAGS for a variant, so a change never replaces the recipe's run."""
    if not extra:
        return WORK / "wu2021"
    return WORK / ("wu2021_" + re.sub(r"[^A-Za-z0-9._=-]+", "-", "_".join(a.lstrip("-") for a in extra)))


def tinytrans(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tinytrans", *args], text=True, **kwargs)
    if done.returncode != 0:
        sys.exit(f"tinytrans {args[0]} failed (exit {done.returncode})")
    return done


def joint_tokenizer(vocab_size: int) -> Path:
    """One SentencePiece BPE model over both sides of their training text (--joined-dictionary)."""
    prefix = WORK / f"wu2021-spm{vocab_size}"
    if not Path(f"{prefix}.model").is_file():
        tinytrans(["tokenizer", "train", "-i", str(tok_dir() / "train.lc.norm.tok.en.gz"),
                   "-i", str(tok_dir() / "train.lc.norm.tok.de.gz"), "-o", str(prefix),
                   "--vocab-size", str(vocab_size)])
    return Path(f"{prefix}.model")


def updates_per_epoch(tokenizer: Path, batch_tokens: int, update_freq: int) -> int:
    """How many updates one pass over the training pairs makes, as training will batch them."""
    import gzip

    from tinytrans.data import length_sorted_batches
    from tinytrans.tokenizer import Tokenizer
    tok = Tokenizer.load(tokenizer)
    lengths = []
    for side in ("en", "de"):
        with gzip.open(tok_dir() / f"train.lc.norm.tok.{side}.gz", "rt", encoding="utf-8") as f:
            lengths.append(np.array([len(ids) for ids in tok.encode(f.read().splitlines())]))
    batches = length_sorted_batches(lengths[0], lengths[1], batch_tokens, seed=1, epoch=0)
    return max(1, math.ceil(len(batches) / update_freq))  # the last update may have fewer


def train(extra: list[str]) -> None:
    import tomllib
    recipe = tomllib.loads(RECIPE.read_text())
    tokenizer = joint_tokenizer(recipe["data"]["vocab_size"])
    epoch = updates_per_epoch(tokenizer, recipe["train"]["batch_tokens"],
                              recipe["train"]["update_freq"])
    run_dir = run_dir_for(extra)
    print(f"one epoch = {epoch} updates; run directory {run_dir}", flush=True)
    start = time.perf_counter()
    tinytrans(["train", "--config", str(RECIPE), "--tokenizer", str(tokenizer),
               "--train", str(tok_dir() / "train.lc.norm.tok"),
               "--valid", str(tok_dir() / "val.lc.norm.tok"), "--src", "en", "--tgt", "de",
               "--validate-every", str(epoch), "--checkpoint-every", str(epoch),
               "--output", str(run_dir), *extra])
    print(f"training took {time.perf_counter() - start:.0f} s wall in this attempt")


def translate(run_dir: Path, checkpoint: str, source: Path, beam: int = 5) -> tuple[list[str], float]:
    start = time.perf_counter()
    done = tinytrans(["translate", "--model", str(run_dir), "--checkpoint", checkpoint,
                      "--beam", str(beam), "--lenpen", "1", "--max-len-a", "0",
                      "--max-len-b", "200", "--no-placeholders"],
                     input=source.read_text(encoding="utf-8"), capture_output=True)
    return done.stdout.splitlines(), time.perf_counter() - start


def score(hyps: list[str], reference: Path) -> dict:
    import sacrebleu
    refs = reference.read_text(encoding="utf-8").splitlines()
    metric = sacrebleu.BLEU(tokenize="none", force=True)
    bleu = metric.corpus_score(hyps, [refs])
    return {"bleu": bleu.score, "precisions": bleu.precisions, "bp": bleu.bp,
            "sys_len": bleu.sys_len, "ref_len": bleu.ref_len,
            "signature": str(metric.get_signature())}


def evaluate(extra: list[str]) -> None:
    run_dir = run_dir_for(extra)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logs = [m for m in metrics if m["event"] == "log"]
    valids = [m for m in metrics if m["event"] == "valid"]
    from tinytrans.checkpoint import BEST, read_training_state
    from tinytrans.rundir import load_run_config
    t = load_run_config(run_dir).train
    last_step = max(m.get("step", 0) for m in metrics)
    stopped = f"at max_steps {t.max_steps}" if last_step >= t.max_steps \
        else "before max_steps (patience, or an interruption)"
    best = read_training_state(run_dir / "checkpoints" / BEST)
    rows = []
    for checkpoint in ("average", "best", "last"):
        valid_hyps, _ = translate(run_dir, checkpoint, tok_dir() / "val.lc.norm.tok.en")
        test_hyps, seconds = translate(run_dir, checkpoint, tok_dir() / "test_2016_flickr.lc.norm.tok.en")
        (run_dir / f"test.{checkpoint}.hyp").write_text("\n".join(test_hyps) + "\n", encoding="utf-8")
        rows.append((checkpoint, score(valid_hyps, tok_dir() / "val.lc.norm.tok.de"),
                     score(test_hyps, tok_dir() / "test_2016_flickr.lc.norm.tok.de"), seconds))
    lines = [
        f"- recipe: `bench/wu2021.toml`{' with ' + ' '.join(extra) if extra else ''}; run "
        f"`{run_dir.relative_to(ROOT)}`; fp32 matmul {matmul_gflops():.0f} GFLOP/s",
        f"- {logs[-1]['step']:,} updates in {logs[-1]['elapsed'] / 60:.1f} minutes of training "
        f"(last log), {len(valids)} validations (one an epoch); stopped at step {last_step:,} "
        f"{stopped}",
        f"- mean throughput {np.mean([m['tokens_per_second'] for m in logs]):,.0f} target tokens/s; "
        f"best checkpoint (by validation {t.best_metric}): step {best.best_step}, loss "
        f"{best.best_loss:.3f}, greedy BLEU {best.best_bleu:.2f}",
        "",
        "| | checkpoint | valid BLEU | test BLEU | 1-4-gram precisions | BP | hyp/ref tokens | test s |",
        "|---|---|---|---|---|---|---|---|",
        f"| Wu et al. 2021 | average of last 10 epochs | - | {THEIRS['bleu']:.2f} | "
        f"{'/'.join(f'{p:.1f}' for p in THEIRS['precisions'])} | {THEIRS['bp']:.3f} | "
        f"{THEIRS['sys_len']:,}/{THEIRS['ref_len']:,} | - |",
    ]
    for checkpoint, valid, test, seconds in rows:
        lines.append(f"| tinytrans | {checkpoint} | {valid['bleu']:.2f} | {test['bleu']:.2f} | "
                     f"{'/'.join(f'{p:.1f}' for p in test['precisions'])} | {test['bp']:.3f} | "
                     f"{test['sys_len']:,}/{test['ref_len']:,} | {seconds:.1f} |")
    lines.append("\n- BLEU: sacrebleu tokenize=none on the dataset's tokenized lowercased text "
                 f"(fairseq's --remove-bpe BLEU), `{rows[0][2]['signature']}`; beam 5, lenpen 1, at most 200 "
                 "pieces, no placeholders")
    record("Reproduction: Wu et al. (2021) Transformer-tiny, Multi30k en-de", lines)
    print("\n".join(lines))


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("train", "evaluate"):
        sys.exit(__doc__)
    {"train": train, "evaluate": evaluate}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
