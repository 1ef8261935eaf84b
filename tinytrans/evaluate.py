"""Scoring with sacrebleu: BLEU, chrF and TER, each reported with its signature.

A score without its signature (tokenizer, casing, smoothing, version) cannot be compared with
anyone else's, so the signature travels with every number (Post, 2018).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sacrebleu.metrics import BLEU, CHRF, TER

from tinytrans.atomic import atomic_write_text
from tinytrans.config import SearchConfig
from tinytrans.errors import UserError
from tinytrans.textio import read_lines, read_parallel

# BLEU's tokenizers, as the installed sacrebleu knows them (they change between its versions).
TOKENIZERS = tuple(BLEU.TOKENIZERS)


@dataclass(frozen=True)
class ScoreOptions:
    lowercase: bool = False
    tokenize: str = "13a"  # BLEU's tokenizer, passed through to sacrebleu


def score_corpus(hyps: list[str], refs: list[list[str]], options: ScoreOptions) -> dict[str, Any]:
    """hyps: one line per segment; refs: one list per reference set, each aligned with hyps."""
    if options.tokenize not in TOKENIZERS:
        raise UserError(f"--tokenize: '{options.tokenize}' is not one of {', '.join(TOKENIZERS)}")
    for ref in refs:
        if len(ref) != len(hyps):
            raise UserError(f"{len(hyps)} hypotheses but a reference set of {len(ref)} lines")
    metrics = {
        "bleu": BLEU(lowercase=options.lowercase, tokenize=options.tokenize),
        "chrf": CHRF(lowercase=options.lowercase),
        "ter": TER(case_sensitive=not options.lowercase),
    }
    result: dict[str, Any] = {"sentences": len(hyps), "signatures": {}}
    for name, metric in metrics.items():
        result[name] = round(metric.corpus_score(hyps, refs).score, 2)
        result["signatures"][name] = str(metric.get_signature())
    return result


def score_files(hyp: Path, refs: list[Path], options: ScoreOptions) -> dict[str, Any]:
    hyps = list(read_lines(hyp))
    references = [list(read_lines(ref)) for ref in refs]
    for path, ref in zip(refs, references):
        if len(ref) != len(hyps):
            raise UserError(f"{hyp} has {len(hyps)} lines but {path} has {len(ref)}")
    return {"test": str(hyp), **score_corpus(hyps, references, options)}


def evaluate_test_set(translator, prefix: str, src: str, tgt: str, search_cfg: SearchConfig,
                      options: ScoreOptions, save_hyp: Path | None = None) -> dict[str, Any]:
    """Translate PREFIX.SRC with `translator` and score it against PREFIX.TGT."""
    pairs = list(read_parallel(prefix, src, tgt, utf8="replace"))
    start = time.perf_counter()
    hyps = [t.text for t in translator.translate((s for s, _ in pairs), search_cfg)]
    seconds = time.perf_counter() - start
    if save_hyp is not None:
        atomic_write_text(hyp_path(save_hyp, prefix, tgt), "".join(h + "\n" for h in hyps))
    scores = score_corpus(hyps, [[t for _, t in pairs]], options)
    return {"test": prefix, **scores,
            "seconds": round(seconds, 3), "sentences_per_second": round(len(hyps) / seconds, 1)}


def hyp_path(save_hyp: Path, prefix: str, tgt: str) -> Path:
    """Where `--save-hyp DIR` keeps the translations of test set PREFIX: DIR/NAME.TGT.hyp."""
    if save_hyp.exists() and not save_hyp.is_dir():
        raise UserError(f"--save-hyp {save_hyp}: exists and is not a directory")
    try:
        save_hyp.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--save-hyp {save_hyp}: cannot create the directory ({error.strerror})") from None
    return save_hyp / f"{Path(prefix).name}.{tgt}.hyp"
