"""tinytrans from Python: load a trained run, then translate, score and look at the attention.

    import tinytrans
    model = tinytrans.load("runs/m30k")                 # checkpoint="best", device="auto"
    model.translate(["A man rides a bike."])            # [translation]
    model.translate(["A man rides a bike."], nbest=3)   # [[(score, translation), ...]]
    model.score(["A man rides a bike."], ["Ein Mann fährt Fahrrad."])  # [log P(target | source)]
    model.attention("A man rides a bike.").to_json()    # pieces and attention weights

Everything goes through translate.Translator, the code behind the CLI's translate and evaluate, so
a sentence gets the same translation either way. Lists in, lists out: one result per input, in
order; an empty input gets an empty translation. Warnings (an over-long input cut to the model's
maximum length) go through Python's `warnings`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from tinytrans.attention import SentenceAttention, sentence_attention
from tinytrans.errors import UserError
from tinytrans.config import SearchConfig
from tinytrans.tokenizer import EOS_ID
from tinytrans.translate import Translator

NBest = list[tuple[float, str]]  # (score, text) pairs, best first


def load(run_dir: str | Path, checkpoint: str = "best", device: str = "auto",
         precision: str = "auto", threads: int | None = None) -> TranslationModel:
    """A trained run, ready to translate.

    checkpoint: 'best', 'last', 'average' or a file; device: 'auto', 'cpu' or 'cuda';
    precision: 'auto', 'fp32', 'bf16' or 'int8' (CPU only); threads: PyTorch's CPU threads.
    """
    return TranslationModel(Translator(run_dir, checkpoint, device, precision, threads))


class TranslationModel:
    """A loaded run. Search settings default to SearchConfig's, as in the CLI."""

    def __init__(self, translator: Translator):
        self.translator = translator

    def translate(self, sentences: Sequence[str], beam: int = SearchConfig.beam,
                  nbest: int | None = None, lenpen: float = SearchConfig.lenpen,
                  max_len_a: float = SearchConfig.max_len_a,
                  max_len_b: int = SearchConfig.max_len_b) -> list[str] | list[NBest]:
        """The best translation of each sentence (a list of str).

        With `nbest`, each sentence gets instead a list of up to `nbest` (score, text) pairs, best
        first; the score is the log-probability divided by length^lenpen (length counts EOS).
        """
        cfg = SearchConfig(beam=beam, nbest=nbest or 1, lenpen=lenpen, max_len_a=max_len_a,
                           max_len_b=max_len_b)
        results = self.translator.translate(_sentences(sentences), cfg, warn=_warn)
        if nbest is None:
            return [t.text for t in results]
        return [t.nbest for t in results]

    def score(self, sources: Sequence[str], targets: Sequence[str]) -> list[float]:
        """Forced decoding: log P(target | source) of each pair, EOS included, no length penalty.

        For rescoring n-best lists or filtering noisy corpora. A translation the model found
        itself scores what its search found (the log_prob, not the length-penalised score).
        """
        return [sum(row) for row in self._score(sources, targets)]

    def score_pieces(self, sources: Sequence[str],
                     targets: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Forced decoding, piece by piece: (piece, log-probability) for each target piece, then
        for </s>. The values of a pair add up to its score()."""
        scores = self._score(sources, targets)
        pieces = self.translator.tgt_tok.encode_pieces([t.strip() for t in targets])
        eos = self.translator.tgt_tok.sp.id_to_piece(EOS_ID)
        return [list(zip(p + [eos], row, strict=True)) for p, row in zip(pieces, scores)]

    def attention(self, source: str, beam: int = SearchConfig.beam,
                  lenpen: float = SearchConfig.lenpen, max_len_a: float = SearchConfig.max_len_a,
                  max_len_b: int = SearchConfig.max_len_b) -> SentenceAttention:
        """Translate one sentence; the attention weights that produced its best translation."""
        if not isinstance(source, str):
            raise UserError("attention() takes one sentence (a str)")
        cfg = SearchConfig(beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b)
        return sentence_attention(self.translator, source, cfg, warn=_warn)

    def _score(self, sources: Sequence[str], targets: Sequence[str]) -> list[list[float]]:
        return self.translator.score(_sentences(sources), _sentences(targets), warn=_warn)


def _sentences(sentences: Sequence[str]) -> list[str]:
    """A list of sentences; one bare str would otherwise be taken as a list of characters."""
    if isinstance(sentences, str):
        raise UserError("expected a list of sentences, got one str: wrap it in a list")
    return list(sentences)


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=4)
