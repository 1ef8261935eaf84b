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
from sacrebleu.metrics.base import Metric

from tinytrans.atomic import atomic_write_text, check_writable
from tinytrans.config import BLEU_TOKENIZE, SearchConfig
from tinytrans.errors import UserError
from tinytrans.lines import Languages
from tinytrans.textio import corpus_file, read_lines, read_parallel

# BLEU's tokenizers, as the installed sacrebleu knows them (they change between its versions).
TOKENIZERS = tuple(BLEU.TOKENIZERS)


@dataclass(frozen=True)
class ScoreOptions:
    lowercase: bool = False
    tokenize: str = BLEU_TOKENIZE  # BLEU's tokenizer, passed through to sacrebleu

    def __post_init__(self) -> None:
        """Checked where the options are built, before a model is loaded or a line translated:
        a bad --tokenize must not wait for the whole test set to be translated."""
        if not isinstance(self.lowercase, bool):
            raise UserError(f"--lowercase: {self.lowercase!r} must be true or false")
        if not isinstance(self.tokenize, str) or self.tokenize not in TOKENIZERS:
            raise UserError(f"--tokenize: {self.tokenize!r} is not one of {', '.join(TOKENIZERS)}")
        try:
            # some tokenizers need extra packages (ja-mecab) or download a model (flores101)
            metrics(self)
        except (RuntimeError, ImportError, OSError) as error:
            raise UserError(f"--tokenize {self.tokenize}: sacrebleu cannot use it here "
                            f"({_first_line(error)})") from None


def metrics(options: ScoreOptions) -> dict[str, Metric]:
    """The three metrics, configured by `options`, by the names the results use."""
    return {
        "bleu": BLEU(lowercase=options.lowercase, tokenize=options.tokenize),
        "chrf": CHRF(lowercase=options.lowercase),
        "ter": TER(case_sensitive=not options.lowercase),
    }


def score_corpus(hyps: list[str], refs: list[list[str]], options: ScoreOptions) -> dict[str, Any]:
    """hyps: one line per segment; refs: one list per reference set, each aligned with hyps.

    An empty corpus has no score (sacrebleu would fail with an IndexError): it is a UserError,
    as is a corpus without a reference set.
    """
    if not refs:
        raise UserError("no reference set: nothing to score against")
    for ref in refs:
        if len(ref) != len(hyps):
            raise UserError(f"{len(hyps)} hypotheses but a reference set of {len(ref)} lines")
    if not hyps:
        raise UserError("no hypotheses and no references: nothing to score")
    result: dict[str, Any] = {"sentences": len(hyps), "signatures": {}}
    for name, metric in metrics(options).items():
        result[name] = round(metric.corpus_score(hyps, refs).score, 2)
        result["signatures"][name] = str(metric.get_signature())
    return result


def score_files(hyp: Path, refs: list[Path], options: ScoreOptions) -> dict[str, Any]:
    hyps = list(read_lines(hyp))
    references = [list(read_lines(ref)) for ref in refs]
    for path, ref in zip(refs, references):
        if len(ref) != len(hyps):
            raise UserError(f"{hyp} has {len(hyps)} lines but {path} has {len(ref)}")
    if not hyps:
        raise UserError(f"{hyp}: no lines (nor in the references): nothing to score")
    return {"test": str(hyp), **score_corpus(hyps, references, options)}


def evaluate_test_set(translator, prefix: str, src: str, tgt: str, search_cfg: SearchConfig,
                      options: ScoreOptions, save_hyp: Path | None = None,
                      zero_shot: bool = False) -> dict[str, Any]:
    """Translate PREFIX.SRC with `translator` (from src into tgt: for a model of several
    directions, the one scored) and score it against PREFIX.TGT.

    Everything that can be wrong with the inputs and the output (missing, unequal or empty files,
    a --save-hyp that cannot be a directory) is found before the first line is translated.
    """
    pairs = read_test_set(prefix, src, tgt)
    tagged = translator.directions.tagged
    saved_to = hyp_path(save_hyp, prefix, tgt, src if tagged else None) \
        if save_hyp is not None else None
    start = time.perf_counter()
    # a model of one pair translates its pair: src and tgt name the test files only
    languages = Languages(src, tgt, zero_shot) if tagged else Languages()
    hyps = [t.text for t in translator.translate((s for s, _ in pairs), search_cfg,
                                                 languages=languages)]
    seconds = max(time.perf_counter() - start, 1e-9)  # a coarse clock may not have ticked
    if saved_to is not None:
        atomic_write_text(saved_to, "".join(h + "\n" for h in hyps))
    scores = score_corpus(hyps, [[t for _, t in pairs]], options)
    return {"test": prefix, "direction": f"{src}-{tgt}", **scores,
            "seconds": round(seconds, 3), "sentences_per_second": round(len(hyps) / seconds, 1)}


def check_test_sets(prefixes: list[str], src: str, tgt: str, save_hyp: Path | None = None) -> None:
    """What evaluate_test_set checks first, for every test set at once: call it before loading
    a model, so the third test set's typo does not wait for the first two to be translated."""
    for prefix in prefixes:
        read_test_set(prefix, src, tgt)
        if save_hyp is not None:
            hyp_path(save_hyp, prefix, tgt)


def read_test_set(prefix: str, src: str, tgt: str) -> list[tuple[str, str]]:
    """The (source, reference) pairs of PREFIX.SRC and PREFIX.TGT; at least one."""
    pairs = list(read_parallel(prefix, src, tgt, utf8="replace"))
    if not pairs:
        raise UserError(f"{corpus_file(prefix, src)}: test set '{prefix}' has no lines, "
                        "nothing to score")
    return pairs


def hyp_path(save_hyp: Path, prefix: str, tgt: str, src: str | None = None) -> Path:
    """Where `--save-hyp DIR` keeps the translations of test set PREFIX: DIR/NAME.TGT.hyp, or
    for a model of several directions DIR/NAME.SRC-TGT.hyp (two sources may share a target).

    DIR is created here, and the file name checked, so that a caller can do it before the work.
    """
    if save_hyp.exists() and not save_hyp.is_dir():
        raise UserError(f"--save-hyp {save_hyp}: exists and is not a directory")
    try:
        save_hyp.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--save-hyp {save_hyp}: cannot create the directory "
                        f"({error.strerror})") from None
    path = save_hyp / f"{Path(prefix).name}.{f'{src}-' if src else ''}{tgt}.hyp"
    check_writable(path)
    return path


def _first_line(error: Exception) -> str:
    """sacrebleu's messages can start with a blank line and go on for a paragraph."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
