"""Reproduce Wu et al. (2021)'s Transformer-tiny on Multi30k en-de: BLEU 41.02 on test_2016_flickr.

    python bench/reproduce_wu2021.py train       # resumable: after a kill, run it again to go on
    python bench/reproduce_wu2021.py evaluate    # test_2016_flickr, scored their way; RESULTS.md
    python bench/reproduce_wu2021.py train --label-smoothing 0.1    # one change: its own run
    python bench/reproduce_wu2021.py train --bpe subword-nmt         # their kind of BPE (below)
    python bench/reproduce_wu2021.py lenpen [flags]   # is it the length? the average on val only

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

`--bpe subword-nmt` (this script's option, not train's; needs `pip install subword-nmt`) segments
the text the way fairseq's examples do instead of with SentencePiece: joint BPE of 10,000 merges
learnt with subword-nmt on both sides of the training text, applied to every file, "@@ " marking
a word that goes on. tinytrans then reads the segmented text through a SentencePiece model of
the "word" kind whose pieces are exactly those BPE tokens, and the hypotheses are scored after
removing the "@@ " marks (fairseq's --remove-bpe).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, WORK, matmul_gflops, record, require_multi30k  # noqa: E402

RECIPE = ROOT / "bench" / "wu2021.toml"
SPLITS = {"train": "train.lc.norm.tok", "val": "val.lc.norm.tok",
          "test": "test_2016_flickr.lc.norm.tok"}  # tok/'s files of each split, en and de
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


@dataclass(frozen=True)
class Segmentation:
    """What the model reads: a tokenizer, each split's file prefix (PREFIX.en, PREFIX.de), and
    how a hypothesis goes back to the dataset's tokenized text."""

    tokenizer: Path
    prefixes: dict[str, Path]  # split -> prefix
    merge_marks: bool = False  # subword-nmt's "@@ " joins pieces: remove them before scoring

    def text(self, hypothesis: str) -> str:
        return re.sub(r"@@( |$)", "", hypothesis) if self.merge_marks else hypothesis


def sentencepiece_segmentation(vocab_size: int) -> Segmentation:
    """One SentencePiece BPE model over both sides of their training text (--joined-dictionary)."""
    prefix = WORK / f"wu2021-spm{vocab_size}"
    if not Path(f"{prefix}.model").is_file():
        tinytrans(["tokenizer", "train", "-i", str(tok_dir() / "train.lc.norm.tok.en.gz"),
                   "-i", str(tok_dir() / "train.lc.norm.tok.de.gz"), "-o", str(prefix),
                   "--vocab-size", str(vocab_size)])
    return Segmentation(Path(f"{prefix}.model"), {split: tok_dir() / name for split, name in SPLITS.items()})


def read_lines(path: Path) -> list[str]:
    """The lines of PATH, or of PATH.gz where only that exists (tok/'s training files)."""
    if path.is_file():
        return path.read_text(encoding="utf-8").splitlines()
    with gzip.open(f"{path}.gz", "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def subword_nmt_segmentation(merges: int = 10000) -> Segmentation:
    """Joint BPE of `merges` merges learnt with subword-nmt on both sides of the training text,
    every split segmented with it; a word-level SentencePiece model over the segmented training
    text, so that each BPE token is one piece and nothing is segmented again."""
    from subword_nmt.apply_bpe import BPE
    from subword_nmt.learn_bpe import learn_bpe
    import sentencepiece as spm

    from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
    directory = WORK / f"wu2021-subword-nmt{merges}"
    done = directory / "pieces.model"
    segmented = {split: directory / split for split in SPLITS}
    if done.is_file():
        return Segmentation(done, segmented, merge_marks=True)
    directory.mkdir(parents=True, exist_ok=True)
    train = {side: read_lines(tok_dir() / f"{SPLITS['train']}.{side}") for side in ("en", "de")}
    codes = directory / "codes"
    with codes.open("w", encoding="utf-8") as out:
        learn_bpe(io.StringIO("\n".join(train["en"] + train["de"]) + "\n"), out, merges)
    with codes.open(encoding="utf-8") as f:
        bpe = BPE(f)
    for split, name in SPLITS.items():
        for side in ("en", "de"):
            lines = train[side] if split == "train" else read_lines(tok_dir() / f"{name}.{side}")
            (directory / f"{split}.{side}").write_text(
                "".join(bpe.process_line(line) + "\n" for line in lines), encoding="utf-8")
    types = {token for side in ("en", "de")
             for line in (directory / f"train.{side}").read_text(encoding="utf-8").splitlines()
             for token in line.split()}
    spm.SentencePieceTrainer.train(
        input=[str(directory / "train.en"), str(directory / "train.de")],
        model_prefix=str(directory / "pieces"), model_type="word", vocab_size=len(types) + 4,
        hard_vocab_limit=False, character_coverage=1.0, normalization_rule_name="identity",
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, minloglevel=2)
    return Segmentation(done, segmented, merge_marks=True)


def recipe() -> dict:
    return tomllib.loads(RECIPE.read_text())


def segmentation_for(extra: list[str]) -> tuple[Segmentation, list[str]]:
    """The segmentation --bpe asks for (default: SentencePiece of the recipe's vocabulary size),
    and the flags left for train."""
    if "--bpe" not in extra:
        return sentencepiece_segmentation(recipe()["data"]["vocab_size"]), extra
    at = extra.index("--bpe")
    if extra[at + 1: at + 2] != ["subword-nmt"]:
        sys.exit("--bpe: only subword-nmt (the default is SentencePiece)")
    return subword_nmt_segmentation(), extra[:at] + extra[at + 2:]


def updates_per_epoch(segmentation: Segmentation, batch_tokens: int, update_freq: int) -> int:
    """How many updates one pass over the training pairs makes, as training will batch them."""
    from tinytrans.data import length_sorted_batches
    from tinytrans.tokenizer import Tokenizer
    tok = Tokenizer.load(segmentation.tokenizer)
    prefix = segmentation.prefixes["train"]
    lengths = []
    for side in ("en", "de"):
        lines = read_lines(Path(f"{prefix}.{side}"))
        lengths.append(np.array([len(ids) for ids in tok.encode(lines)]))
    batches = length_sorted_batches(lengths[0], lengths[1], batch_tokens, seed=1, epoch=0)
    return max(1, math.ceil(len(batches) / update_freq))  # the last update may have fewer


def train(extra: list[str]) -> None:
    run_dir = run_dir_for(extra)  # named after every flag, --bpe included
    segmentation, extra = segmentation_for(extra)
    train_cfg = recipe()["train"]
    epoch = updates_per_epoch(segmentation, train_cfg["batch_tokens"], train_cfg["update_freq"])
    print(f"one epoch = {epoch} updates; run directory {run_dir}", flush=True)
    start = time.perf_counter()
    tinytrans(["train", "--config", str(RECIPE), "--tokenizer", str(segmentation.tokenizer),
               "--train", str(segmentation.prefixes["train"]),
               "--valid", str(segmentation.prefixes["val"]), "--src", "en", "--tgt", "de",
               "--validate-every", str(epoch), "--checkpoint-every", str(epoch),
               "--output", str(run_dir), *extra])
    print(f"training took {time.perf_counter() - start:.0f} s wall in this attempt")


def translate(run_dir: Path, checkpoint: str, segmentation: Segmentation, split: str,
              beam: int = 5, lenpen: float = 1.0) -> tuple[list[str], float]:
    """The split's English translated; hypotheses as the dataset's tokenized text."""
    source = Path(f"{segmentation.prefixes[split]}.en")
    start = time.perf_counter()
    done = tinytrans(["translate", "--model", str(run_dir), "--checkpoint", checkpoint,
                      "--beam", str(beam), "--lenpen", str(lenpen), "--max-len-a", "0",
                      "--max-len-b", "200", "--no-placeholders"],
                     input=source.read_text(encoding="utf-8"), capture_output=True)
    return [segmentation.text(line) for line in done.stdout.splitlines()], time.perf_counter() - start


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
    segmentation, _ = segmentation_for(extra)
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
        valid_hyps, _ = translate(run_dir, checkpoint, segmentation, "val")
        test_hyps, seconds = translate(run_dir, checkpoint, segmentation, "test")
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


def lenpen(extra: list[str]) -> None:
    """Our hypotheses are shorter than theirs (BP 0.98 against 0.999): would a length penalty
    that favours longer ones close the gap? The average checkpoint on the validation set only
    (the test set is read once per recipe, by `evaluate`)."""
    run_dir = run_dir_for(extra)
    segmentation, _ = segmentation_for(extra)
    lines = [f"- run `{run_dir.relative_to(ROOT)}`, the average checkpoint, beam 5, on val only; "
             f"fp32 matmul {matmul_gflops():.0f} GFLOP/s", "",
             "| lenpen | valid BLEU | 1-4-gram precisions | BP |", "|---|---|---|---|"]
    for alpha in (1.0, 1.3, 1.6, 2.0):
        hyps, _ = translate(run_dir, "average", segmentation, "val", lenpen=alpha)
        s = score(hyps, tok_dir() / "val.lc.norm.tok.de")
        lines.append(f"| {alpha:g} | {s['bleu']:.2f} | {'/'.join(f'{p:.1f}' for p in s['precisions'])} "
                     f"| {s['bp']:.3f} |")
    record("Reproduction: Wu et al. (2021), the length penalty on val", lines)
    print("\n".join(lines))


def main() -> None:
    commands = {"train": train, "evaluate": evaluate, "lenpen": lenpen}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
