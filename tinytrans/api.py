"""tinytrans from Python: load a trained run, then translate, score and look at the attention.

    import tinytrans
    model = tinytrans.load("runs/m30k")                 # checkpoint="best", device="auto"
    model.translate(["A man rides a bike."])            # [translation]
    model.translate(["A man rides a bike."], nbest=3)   # [[(score, translation), ...]]
    model.score(["A man rides a bike."], ["Ein Mann fährt Fahrrad."])  # [log P(target | source)]
    model.attention("A man rides a bike.").to_json()    # pieces and attention weights
    model.translate(["A man rides a bike."], constraints=[["Fahrrad"]])  # phrases that must appear
    model.translate(["A dog."], glossary={"dog": "Hund"})         # terms, wherever they occur
    model.translate(["A man."], alignment=True)          # [(translation, [(src, tgt) word pairs])]
    model.translate(["A man."], prefixes=["Ein"])        # translations that begin with "Ein"
    model.detect(["Ein Mann.", "A man."])                # [("de", 100.0), ("en", 100.0)]
    model.translate(["A man."], sample="all", nbest=4, seed=1)  # four sampled translations
    model.translate(["Ein Mann."], tgt="fr")             # a model of several directions
    model.translate(["<p>A <b>man</b>.</p>"], format="html")  # tags kept around their words

Everything goes through translate.Translator, the code behind the CLI's translate and evaluate, so
a sentence gets the same translation either way. Lists in, lists out: one result per input, in
order; an empty input gets an empty translation. Warnings (an over-long input cut to the model's
maximum length) go through Python's `warnings`. A wrong argument is a UserError that names it as
the caller wrote it (`beam: 0 must be at least 1`, `sentences[2]: 42 (int) must be a sentence`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Iterable
from numbers import Integral, Real
from pathlib import Path

import torch

from tinytrans.attention import SentenceAttention, sentence_attention
from tinytrans.config import (DEVICES, GLOSSARY_METHODS, INFERENCE_PRECISIONS, TEXT_FORMATS,
                              SearchConfig, sample_option)
from tinytrans.errors import UserError
from tinytrans.terminology import Glossary, check_phrases, check_prefix
from tinytrans.tokenizer import EOS_ID
from tinytrans.lines import Languages, check_markup_options
from tinytrans.translate import LineOptions, Translator

NBest = list[tuple[float, str]]  # (score, text) pairs, best first


def load(run_dir: str | Path, checkpoint: str | Path = "best", device: str = "auto",
         precision: str = "auto", threads: int | None = None) -> TranslationModel:
    """A trained run, ready to translate.

    checkpoint: 'best', 'last', 'average' or a file; device: 'auto', 'cpu' or 'cuda';
    precision: 'auto', 'fp32', 'bf16' or 'int8' (CPU only); threads: PyTorch's CPU threads.
    """
    run_dir = _path("run_dir", run_dir)
    checkpoint = str(_path("checkpoint", checkpoint))
    _check_device_and_precision(device, precision)
    if threads is not None:
        _positive_int("threads", threads)
    return TranslationModel(Translator(run_dir, checkpoint, device, precision, threads))


class TranslationModel:
    """A loaded run. Search settings default to SearchConfig's, as in the CLI."""

    def __init__(self, translator: Translator):
        self.translator = translator

    def translate(self, sentences: Iterable[str], beam: int = SearchConfig.beam,
                  nbest: int | None = None, lenpen: float = SearchConfig.lenpen,
                  max_len_a: float = SearchConfig.max_len_a,
                  max_len_b: int = SearchConfig.max_len_b,
                  constraints: Iterable[Iterable[str]] | None = None,
                  prefixes: Iterable[str] | None = None,
                  glossary: dict[str, str] | None = None, glossary_method: str = "place",
                  alignment: bool = False,
                  split_sentences: bool | None = True, sample: int | str | None = None,
                  temperature: float = SearchConfig.temperature,
                  top_p: float = SearchConfig.top_p, seed: int = SearchConfig.seed,
                  src: str | None = None, tgt: str | None = None,
                  zero_shot: bool = False, placeholders: bool = True,
                  format: str = "text") -> list:
        """The best translation of each sentence (a list of str).

        With `nbest`, each sentence gets instead a list of up to `nbest` (score, text) pairs, best
        first; the score is the log-probability divided by length^lenpen (length counts EOS).
        constraints: per sentence, target phrases its translation must contain; prefixes: per
        sentence, the words its translation begins with ("" for none; autocompletion); glossary:
        {source term: target term}, applied wherever a source term occurs, by glossary_method
        ("place": put where the source term was translated; "constrain": searched for).
        alignment=True: each result becomes (text, [(source word, target word), ...]), or
        (score, text, pairs) in an n-best list. split_sentences: True (the default; None, which
        older versions took, is taken as True) translates each sentence of a line apart and
        joins them back; False keeps each line whole (too long: cut, with a warning). sample: K
        or "all" draws translations (nbest of them) instead of searching, with temperature,
        top_p and seed. src, tgt: the languages, for a model of several directions (src None:
        detected per sentence; tgt None: the model's only target); a pair it was not trained on
        goes through a pivot language, or, with zero_shot=True, straight there. placeholders:
        URLs, e-mail addresses, numbers and {variables} come back byte for byte (the model
        sees stand-ins); False gives them to the model as they are. format="html": each item is
        HTML, given back with its text translated and its tags kept (markup.py).
        """
        cfg = _search_config(beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b,
                             nbest=1 if nbest is None else nbest,
                             sample=sample_option(sample, "sample"),
                             temperature=temperature, top_p=top_p, seed=seed)
        sentences = _sentences("sentences", sentences)
        split = True if split_sentences is None else split_sentences
        options = LineOptions(_bool("split_sentences", split),
                              _bool("alignment", alignment), _glossary(glossary),
                              _choice("glossary_method", glossary_method, GLOSSARY_METHODS),
                              _bool("placeholders", placeholders))
        phrases = None if constraints is None else _constraints(constraints, len(sentences))
        starts = None if prefixes is None else _prefixes(prefixes, len(sentences))
        languages = Languages(_language("src", src), _language("tgt", tgt),
                              _bool("zero_shot", zero_shot))
        self.translator.route("", languages)  # a language the model lacks: before any work
        if _choice("format", format, TEXT_FORMATS) == "html":
            check_markup_options(cfg, options, phrases, starts)
            return list(self.translator.translate_markup(sentences, cfg, _warn, languages,
                                                         options.placeholders))
        results = self.translator.translate(sentences, cfg, warn=_warn, options=options,
                                            constraints=phrases, prefixes=starts,
                                            languages=languages)
        if nbest is None:
            return [(t.text, t.alignments[0]) if alignment else t.text for t in results]
        if alignment:
            return [[(score, text, pairs) for (score, text), pairs in zip(t.nbest, t.alignments)]
                    for t in results]
        return [t.nbest for t in results]

    def detect(self, texts: Iterable[str]) -> list[tuple[str, float]]:
        """Which of the run's languages each text is in: (language, confidence in percent)."""
        return [(g.language, g.confidence)
                for g in self.translator.detect(_sentences("texts", texts))]

    def score(self, sources: Iterable[str], targets: Iterable[str],
              tgt: str | None = None) -> list[float]:
        """Forced decoding: log P(target | source) of each pair, EOS included, no length penalty.

        For rescoring n-best lists or filtering noisy corpora. A translation the model found
        itself scores what its search found (the log_prob, not the length-penalised score).
        tgt: the targets' language, for a model of several.
        """
        return [sum(row) for row in self._score(*_pairs(sources, targets), tgt)]

    def score_pieces(self, sources: Iterable[str], targets: Iterable[str],
                     tgt: str | None = None) -> list[list[tuple[str, float]]]:
        """Forced decoding, piece by piece: (piece, log-probability) for each target piece, then
        for </s>. The values of a pair add up to its score()."""
        sources, targets = _pairs(sources, targets)  # lists now: a generator is read once
        scores = self._score(sources, targets, tgt)
        pieces = self.translator.tgt_tok.encode_pieces([t.strip() for t in targets])
        eos = self.translator.tgt_tok.sp.id_to_piece(EOS_ID)
        return [list(zip(p + [eos], row, strict=True)) for p, row in zip(pieces, scores)]

    def attention(self, source: str, beam: int = SearchConfig.beam,
                  lenpen: float = SearchConfig.lenpen, max_len_a: float = SearchConfig.max_len_a,
                  max_len_b: int = SearchConfig.max_len_b,
                  tgt: str | None = None) -> SentenceAttention:
        """Translate one sentence; the attention weights that produced its best translation.
        tgt: the target language of a model of several (its tag shows as the first piece)."""
        if not isinstance(source, str):
            raise UserError(f"source: {_shown(source)} must be one sentence (a str)")
        cfg = _search_config(beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b)
        return sentence_attention(self.translator, source, cfg, warn=_warn,
                                  tag=self._tag(tgt))

    def _tag(self, tgt: str | None) -> tuple[int, ...]:
        """The source ids that ask for `tgt` (none for a model of one pair)."""
        targets = sorted({d.tgt for d in self.translator.directions.trained})
        tgt = _language("tgt", tgt) or self.translator.directions.default_target()
        if tgt not in targets:
            raise UserError(f"tgt: {_shown(tgt)}; this model translates into "
                            f"{', '.join(targets)}")
        return self.translator.tags[tgt]

    def _score(self, sources: list[str], targets: list[str],
               tgt: str | None = None) -> list[list[float]]:
        return self.translator.score(sources, targets, warn=_warn, tag=self._tag(tgt))


# ---------------------------------------------------------------------------------------------
# Checking arguments: every mistake is a UserError naming the argument as the caller wrote it


def _sentences(name: str, sentences: Iterable[str]) -> list[str]:
    """A list of str. One bare str would otherwise be taken as a list of characters, and a
    None or a number inside would fail deep in the tokenizer with a message about neither."""
    if isinstance(sentences, str):
        raise UserError(f"{name}: expected a list of sentences, got one str: wrap it in a list")
    if isinstance(sentences, (bytes, bytearray)) or not isinstance(sentences, Iterable):
        raise UserError(f"{name}: {_shown(sentences)} must be a list of sentences (str)")
    result = list(sentences)
    for i, sentence in enumerate(result):
        if not isinstance(sentence, str):
            raise UserError(f"{name}[{i}]: {_shown(sentence)} must be a sentence (a str)")
    return result


def _language(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise UserError(f"{name}: {_shown(value)} must be a language code (a str) or None")
    return value


def _pairs(sources: Iterable[str], targets: Iterable[str]) -> tuple[list[str], list[str]]:
    """Sources and targets as lists of str of one length: pair i is (sources[i], targets[i])."""
    sources, targets = _sentences("sources", sources), _sentences("targets", targets)
    if len(sources) != len(targets):
        raise UserError(f"sources has {len(sources)} sentences but targets has {len(targets)}: "
                        "they must pair up")
    return sources, targets


def _search_config(**fields: object) -> SearchConfig:
    """SearchConfig checks the ranges, in the CLI's words (`--beam: 0 must be at least 1`); an
    API caller wrote `beam=0`, so its flags are reworded into argument names. The types are
    checked here, from SearchConfig's own field types: it would fail on beam="5" with a
    TypeError about '<'."""
    types = {f.name: f.type for f in dataclasses.fields(SearchConfig)}
    values = {}
    for name, value in fields.items():
        kind = types[name]
        if kind == "int | None" and value is None:
            values[name] = None
        elif kind in ("int", "int | None"):
            _integer(name, value)
            values[name] = int(value)  # type: ignore[arg-type]
        elif kind == "float":
            _number(name, value)
            values[name] = float(value)  # type: ignore[arg-type]
        else:  # a new kind of field in SearchConfig: say how the API checks it, here
            raise TypeError(f"SearchConfig.{name}: no API check for a field of type {kind}")
    try:
        return SearchConfig(**values)
    except UserError as error:
        raise UserError(_argument_names(str(error))) from None


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UserError(f"{name}: {_shown(value)} must be one of {', '.join(choices)}")
    return value


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name}: {_shown(value)} must be True or False")
    return value


def _glossary(glossary: object) -> Glossary | None:
    """{source term: target term} -> a Glossary, each term a non-empty str."""
    if glossary is None:
        return None
    if not isinstance(glossary, dict):
        raise UserError(f"glossary: {_shown(glossary)} must be a dict of source term: target term")
    pairs = {}
    for source, target in glossary.items():
        if not isinstance(source, str) or not " ".join(source.split()):
            raise UserError(f"glossary: key {_shown(source)} must be a source term (a str)")
        check_phrases([target], f"glossary[{source!r}]")
        pairs[" ".join(source.split())] = " ".join(target.split())
    return Glossary.from_pairs(pairs)


def _constraints(constraints: object, count: int) -> list[list[str]]:
    """One list of phrases (str) per sentence."""
    if isinstance(constraints, (str, bytes)) or not isinstance(constraints, Iterable):
        raise UserError(f"constraints: {_shown(constraints)} must be a list with one list of "
                        "phrases per sentence")
    result = []
    for i, phrases in enumerate(constraints):
        if isinstance(phrases, (str, bytes)) or not isinstance(phrases, Iterable):
            raise UserError(f"constraints[{i}]: {_shown(phrases)} must be a list of phrases "
                            "(wrap one phrase in a list)")
        result.append(check_phrases(list(phrases), f"constraints[{i}]"))
    if len(result) != count:
        raise UserError(f"constraints has {len(result)} lists but sentences has {count}: one "
                        "list of phrases (maybe empty) per sentence")
    return result


def _prefixes(prefixes: object, count: int) -> list[str]:
    """One prefix (str, maybe empty) per sentence."""
    if isinstance(prefixes, (str, bytes)) or not isinstance(prefixes, Iterable):
        raise UserError(f"prefixes: {_shown(prefixes)} must be a list with one prefix (a str, "
                        "maybe empty) per sentence")
    result = [check_prefix(prefix, f"prefixes[{i}]") for i, prefix in enumerate(prefixes)]
    if len(result) != count:
        raise UserError(f"prefixes has {len(result)} items but sentences has {count}: one "
                        "prefix (maybe empty) per sentence")
    return result


def _argument_names(message: str) -> str:
    """`--max-len-a: 11.0 must ...` -> `max_len_a: 11.0 must ...`."""
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m[1].replace("-", "_"), message)


def _integer(name: str, value: object) -> None:
    # bool is an int to Python, but beam=True is a mistake, not a beam of 1
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise UserError(f"{name}: {_shown(value)} must be an int")


def _positive_int(name: str, value: object) -> None:
    _integer(name, value)
    if value < 1:  # type: ignore[operator]
        raise UserError(f"{name}: {value} must be at least 1")


def _number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UserError(f"{name}: {_shown(value)} must be a number")


def _path(name: str, value: object) -> Path:
    if not isinstance(value, (str, os.PathLike)) or isinstance(os.fspath(value), bytes):
        raise UserError(f"{name}: {_shown(value)} must be a path (a str or a pathlib.Path)")
    return Path(value)


def _check_device_and_precision(device: object, precision: object) -> None:
    """Translator checks these too, but in the CLI's words (--device, --precision)."""
    for name, value, allowed in (("device", device, DEVICES),
                                 ("precision", precision, INFERENCE_PRECISIONS)):
        if not isinstance(value, str) or value not in allowed:
            raise UserError(f"{name}: {_shown(value)} is not one of {', '.join(allowed)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda', but no CUDA GPU is available to this PyTorch")
    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if precision == "int8" and on_gpu:
        raise UserError("precision: 'int8' runs on the CPU only (device='cpu')")


def _shown(value: object) -> str:
    """A value as a message shows it: its repr, cut short, and its type."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=4)
