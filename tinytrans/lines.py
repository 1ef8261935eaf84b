"""Lines in, lines out: what every engine does around its search.

A stream of lines is read in chunks (one line at a time when a person types them). Each line
becomes one or more segments: its sentences (sentences.py; a paragraph given whole to a model
trained on single sentences loses some of them), or, when asked, itself. A line's constraints
become target phrases of its segments, and a glossary's terms are found in them (terminology.py);
a line's prefix (the words its translation must begin with) goes with its first segment.
The engine searches the segments however it batches them; the glossary terms are put in place
in what it found; then each line is assembled again from its segments: one Translation per
line, in input order, whatever the lines contain.

The engines: translate.Translator (the PyTorch model: search_loop.py and its strategies)
and ct2engine.CT2Translator (CTranslate2's C++ engine). This module imports no torch, so that the
second needs none.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from tinytrans.config import SearchConfig
from tinytrans.directions import Direction, Directions, Route, tag_id
from tinytrans.errors import UserError
from tinytrans.langid import Guess, LanguageIdentifier, identifier_in, missing_identifier
from tinytrans.lengths import length_batches
from tinytrans.markup import translate_html
from tinytrans.placeholders import Masked, mask, mask_like
from tinytrans.sentences import fit_sentences, join_translations, split_sentences
from tinytrans.terminology import Alignment, Glossary, TermLinks, TermMatch, place_terms
from tinytrans.textio import LineCounter, decode_line
from tinytrans.tokenizer import UNK_ID, Tokenizer

Warn = Callable[[str], None]
Phrase = tuple[int, ...]  # target piece ids of one constraint


class Found(Protocol):
    """A hypothesis as an engine returns it (search.Hypothesis is one)."""

    tokens: list[int]  # target piece ids, without BOS and EOS
    score: float




@dataclass(frozen=True)
class Translation:
    text: str  # the best translation ("" for an empty input line)
    nbest: list[tuple[float, str]]  # (score, text), best first
    alignments: list[Alignment] | None = None  # with alignment: one per n-best entry


@dataclass(frozen=True)
class LineOptions:
    """What happens to each line besides the search."""

    # Each line translated sentence by sentence and joined back (a model trained on single
    # sentences drops some of a paragraph's); False: each line whole, cut if too long
    split_sentences: bool = True
    alignment: bool = False  # align the words of each translation with its source's
    glossary: Glossary | None = None  # source terms whose target terms each translation holds
    # How a glossary's terms get into the translation: "place" translates freely, then puts each
    # term where the words aligned to its source term are (terminology.place_terms);
    # "constrain" makes the search include them (constraints.py), which for a term the model
    # would not choose itself tends to translate the source word too, or cut the sentence
    glossary_method: str = "place"
    # URLs, e-mail addresses, numbers and {variables} replaced by stand-ins the model copies,
    # and put back byte for byte (placeholders.py)
    placeholders: bool = True


@dataclass
class Segment:
    """What one batch row translates: a whole line, or one of its sentences."""

    line: int  # index of its line in the chunk
    text: str
    ids: np.ndarray  # source piece ids, without EOS
    phrases: list[Phrase]  # target piece ids the translation must contain
    prefix: Phrase = ()  # target piece ids the translation must begin with
    prefix_ends_word: bool = False  # the prefix ended with a space: its last word is finished
    terms: list[TermMatch] = field(default_factory=list)  # glossary terms to place (method place)
    tag: Phrase = ()  # source ids before the text's own: a multilingual model's target tag
    found: list[Found] | None = None  # filled by the engine
    alignments: list[Alignment] | None = None  # one per hypothesis
    term_links: list[TermLinks] | None = None  # one per hypothesis, for placing terms
    texts: list[str] | None = None  # the hypotheses' texts (with their terms placed)

    @property
    def source(self) -> np.ndarray:
        """What the model reads (without EOS): the tag, then the text's ids."""
        return np.concatenate([np.asarray(self.tag, dtype=np.int64), self.ids]) if self.tag \
            else self.ids


@dataclass(frozen=True)
class Languages:
    """The languages asked of a line: `src` None is detected (a model of one pair: its
    source), `tgt` None is the model's only target; `zero_shot` goes straight to a pair the
    model was not trained on, where it would otherwise take a pivot or refuse."""

    src: str | None = None
    tgt: str | None = None
    zero_shot: bool = False


class AttentionShape(NamedTuple):
    """The decoder's layers and heads, where an engine can show its cross-attention."""

    layers: int
    heads: int


class LineTranslator(ABC):
    """The line handling every engine shares, and the contract an engine fulfils: it gives its
    tokenizers, the longest source it takes and its language pair to __init__, implements
    search_batch, and says with attention_shape whether it can show attention. The server and
    the API rely on this contract alone (never on an engine's other attributes)."""

    def __init__(self, src_tok: Tokenizer, tgt_tok: Tokenizer, max_source_pieces: int,
                 directions: Directions, model_dir: Path | None = None):
        self.src_tok, self.tgt_tok = src_tok, tgt_tok
        self.directions = directions
        # a tagged source is one piece longer than its text
        self.max_source_pieces = max_source_pieces - (1 if directions.tagged else 0)
        self.model_dir = model_dir  # where the run (or its export) keeps its langid.json

    @property
    def source_language(self) -> str:
        """A model of one pair: its source; a multilingual one: its first language."""
        return self.directions.trained[0].src

    @property
    def target_language(self) -> str:
        return self.directions.trained[0].tgt

    @cached_property
    def tags(self) -> dict[str, Phrase]:
        """The source ids that ask for each target language: its tag, or none for a model of one
        pair."""
        if not self.directions.tagged:
            return {language: () for language in self.directions.languages}
        return {language: (tag_id(self.src_tok, language),)
                for language in self.directions.languages}

    def route(self, text: str, languages: Languages, where: str = "") -> Route:
        """The way a line goes: from its language (given, or detected among the model's) to the
        one asked for (directions.Directions.route)."""
        directions = self.directions
        tgt = languages.tgt or directions.default_target()
        if tgt is None:
            raise UserError(f"{where}--tgt: this model translates into "
                            f"{', '.join(sorted({d.tgt for d in directions.trained}))}; name one")
        src = languages.src or directions.default_source()
        if src is None and text.strip() and tgt in directions.languages:
            # among the languages that can reach the target: a line can only be translated
            # from one of those, and is most likely in the one it most resembles
            src = self.detect([text], directions.sources_for(tgt, languages.zero_shot))[0].language
        return directions.route(src or tgt, tgt, languages.zero_shot, where)

    @cached_property
    def identifier(self) -> LanguageIdentifier | None:
        """Which of its languages a text is in (langid.py), read when first asked for: a
        damaged file stops detection, not translation; None for a run made before them."""
        return identifier_in(self.model_dir) if self.model_dir is not None else None

    def detect(self, texts: list[str], among: list[str] | None = None) -> list[Guess]:
        """The language of each text, among those of the model's run (langid.py), or only
        `among` them."""
        if self.identifier is None:
            raise missing_identifier("detect")
        return [self.identifier.identify(text, among) for text in texts]

    def search_segments(self, segments: list[Segment], cfg: SearchConfig,
                        options: LineOptions) -> None:
        """Segments sorted by length and cut into batches of about cfg.batch_tokens source tokens
        x decoder rows (lengths.length_batches: training's batcher), each searched by the engine.
        A sentence takes a row per beam, or per sample."""
        rows = cfg.nbest if cfg.sampling else cfg.beam
        for batch in length_batches(list(range(len(segments))), [len(s.ids) for s in segments],
                                    cfg.batch_tokens, rows):
            self.search_batch([segments[i] for i in batch], cfg, options)

    @abstractmethod
    def search_batch(self, segments: list[Segment], cfg: SearchConfig,
                     options: LineOptions) -> None:
        """Fill each segment's `found` (and `alignments` when options ask): one batch, searched
        at once."""

    def attention_shape(self) -> AttentionShape | None:
        """The decoder's layers and heads where this engine records its attention, else None."""
        return None

    def aligns(self) -> bool:
        """Whether this engine gives word alignments (LineOptions.alignment)."""
        return False

    def translate_markup(self, documents: Iterable[str], cfg: SearchConfig,
                         warn: Warn | None = None, languages: Languages = Languages(),
                         placeholders: bool = True) -> Iterator[str]:
        """Each HTML document (or fragment) with its text translated and its markup kept, the
        inline tags placed through the word alignments where the engine gives them
        (markup.py). The runs of text of a document are translated in one call."""
        translate_texts = self.texts_translator(cfg, warn, languages, placeholders)
        for document in documents:
            yield translate_html(document, translate_texts)

    def texts_translator(self, cfg: SearchConfig, warn: Warn | None = None,
                         languages: Languages = Languages(), placeholders: bool = True
                         ) -> Callable[[list[str]], list[tuple[str, Alignment | None]]]:
        """A function from texts to their (translation, word alignment or None), each text
        one line: what markup.py and documents.py place their tags and runs with."""
        # a pair the model reaches through a pivot has no alignment: tags go by position
        pivot = languages.src is not None and languages.tgt is not None and len(
            self.route("", languages).steps) > 1
        aligned = self.aligns() and not pivot

        def translate_texts(texts: list[str]) -> list[tuple[str, Alignment | None]]:
            found = self.translate(texts, cfg, warn=warn, languages=languages,
                                   options=LineOptions(alignment=aligned,
                                                       placeholders=placeholders))
            return [(t.text, t.alignments[0] if aligned else None) for t in found]
        return translate_texts

    def check_supported(self, cfg: SearchConfig, options: LineOptions, constrained: bool) -> None:
        """Raise a UserError, before any work, for what this engine cannot do (`constrained`:
        the lines come with constraints)."""

    def translate(self, lines: Iterable[str], cfg: SearchConfig, chunk_lines: int = 2000,
                  warn: Warn | None = None, options: LineOptions = LineOptions(),
                  constraints: Iterable[list[str]] | None = None,
                  prefixes: Iterable[str] | None = None,
                  languages: Languages | Iterable[Languages] = Languages()) -> Iterator[Translation]:
        """Translate a stream of lines; yields one Translation per line, in input order.

        Lines are read `chunk_lines` at a time; the engine batches a chunk's segments
        (`cfg.batch_tokens` source tokens x beams, or x samples, per batch). `constraints`, when
        given, pairs with `lines`: the target phrases of each line (a list, maybe empty), and
        must have as many items. So does `prefixes`: the text each line's translation begins
        with ("" for none), the rest found by the search (autocompletion). `languages`: for every
        line, or one per line, the languages asked (Languages)."""
        warn = warn or (lambda message: None)
        self.check_supported(cfg, options, constraints is not None)
        check_sampling_alone(cfg, constraints is not None or options.glossary is not None)
        line_phrases = PairedInput("constraints", constraints, [])
        line_prefixes = PairedInput("prefixes", prefixes, "")
        one_for_all = isinstance(languages, Languages)
        line_languages = PairedInput("languages", None if one_for_all else languages,
                                     languages if one_for_all else None)
        chunk: list[Line] = []
        first_line = 1
        for line in lines:
            number = first_line + len(chunk)
            where = f"line {number}: " if not one_for_all or self.directions.tagged else ""
            route = self.route(line, line_languages.next_for(number), where)
            phrases, prefix = line_phrases.next_for(number), line_prefixes.next_for(number)
            masked = mask(line.strip()) if options.placeholders else Masked(line.strip(), (), ())
            # constraints and a prefix are target text: a span in them is asked for as its
            # stand-in, and comes back with the others (a span the line has not: unmasked)
            asked = [mask_like(masked, text) for text in [*phrases, prefix]]
            if None in asked:
                masked = Masked(line.strip(), (), ())
            else:
                phrases, prefix = asked[:-1], asked[-1]
            chunk.append(Line(number, masked.text, phrases, prefix, route, masked))
            if len(chunk) >= chunk_lines:
                yield from self._translate_chunk(chunk, first_line, cfg, warn, options)
                first_line += len(chunk)
                chunk = []
        if chunk:
            yield from self._translate_chunk(chunk, first_line, cfg, warn, options)
        for paired in (line_phrases, line_prefixes, line_languages):
            paired.check_exhausted(first_line + len(chunk) - 1)

    def _translate_chunk(self, chunk: list[Line], first_line: int, cfg: SearchConfig,
                         warn: Warn, options: LineOptions) -> Iterator[Translation]:
        """The chunk's lines translated: those going through a pivot first into it (the best
        translation of each, with default options), then every line its last step."""
        pivoted = [i for i, line in enumerate(chunk) if len(line.route.steps) > 1]
        if pivoted:
            check_pivot_options(options, chunk[pivoted[0]])
            halfway = [replace(chunk[i], phrases=[], prefix="",
                               route=Route(chunk[i].route.src, chunk[i].route.steps[0].tgt,
                                           chunk[i].route.steps[:1])) for i in pivoted]
            found = self._translate_lines(halfway, first_line, replace(cfg, nbest=1) if
                                          not cfg.sampling else cfg, warn,
                                          LineOptions(split_sentences=options.split_sentences))
            for i, translation in zip(pivoted, found):
                route = chunk[i].route
                chunk[i] = replace(chunk[i], text=translation.text,
                                   route=Route(route.steps[1].src, route.tgt, route.steps[1:]))
        for line, translation in zip(chunk, self._translate_lines(chunk, first_line, cfg, warn,
                                                                   options)):
            yield restored(translation, line.masked)

    def _translate_lines(self, chunk: list[Line], first_line: int, cfg: SearchConfig,
                         warn: Warn, options: LineOptions) -> Iterator[Translation]:
        """Lines of one step (or none) each: segments, the search, terms placed, lines again."""
        texts = [line.text for line in chunk]
        encoded = self.src_tok.encode(texts)  # one call for the chunk: lines that fit are done
        segments = [segment for index, (text, ids, line) in enumerate(zip(texts, encoded, chunk))
                    if line.route.steps
                    for segment in self.segments(index, line.number, text,
                                                 np.asarray(ids, dtype=np.int64), line.phrases,
                                                 options, warn, line.prefix,
                                                 line.route.steps[-1])]
        self.search_segments([s for s in segments if len(s.ids)], cfg, options)
        self.place_terms([s for s in segments if s.terms and s.found], cfg, options,
                         first_line, warn)
        self.decode_found([s for s in segments if s.found and s.texts is None])
        by_line: list[list[Segment]] = [[] for _ in chunk]
        for segment in segments:
            by_line[segment.line].append(segment)
        for line, text, parts in zip(chunk, texts, by_line):
            if not line.route.steps:  # already in the language asked for
                yield unchanged(text, options.alignment, cfg.nbest)
            else:
                yield self.assemble(parts, options.alignment, len(text.split()))

    def segments(self, index: int, number: int, line: str, ids: np.ndarray, phrases: list[str],
                 options: LineOptions, warn: Warn, prefix: str = "",
                 direction: Direction | None = None) -> list[Segment]:
        """A line (stripped, and its source ids) as the segments it is translated in: its
        sentences, each cut further if too long for the model (sentences.split_to_fit); or, with
        options.split_sentences False or constraints or a prefix on a line that fits, itself,
        cut to the model's length."""
        texts = [line]
        fits = len(ids) <= self.max_source_pieces
        # a line with constraints or a prefix that fits stays whole: they belong to all of it
        if not options.split_sentences or ((phrases or prefix) and fits):
            ids = self.cut_to_fit(ids, number, warn)
        else:
            direction = direction or self.directions.trained[0]
            sentences = split_sentences(line, direction.src)
            if not fits or len(sentences) > 1:
                texts = fit_sentences(sentences, self._fits) or [""]
        if len(texts) > 1 and (phrases or prefix):
            what = " and its ".join(n for n, v in (("constraints", phrases), ("prefix", prefix)) if v)
            warn(f"line {number}: split into {len(texts)} sentences; its {what} go with the first")
        if prefix and not line:
            warn(f"line {number}: empty, so its prefix is not used")
        prefix_ids = self.prefix_ids(prefix, number, warn) if prefix and line else ()
        tag = self.tags[(direction or self.directions.trained[0]).tgt]
        result = []
        for k, text in enumerate(texts):
            found = list(phrases if k == 0 else [])
            terms = options.glossary.matches(text) if options.glossary is not None else []
            targets = list(dict.fromkeys(m.target for m in terms if m.target not in found))
            # placing rewrites words after the search, which could rewrite the prefix's
            if options.glossary_method == "constrain" or (k == 0 and prefix_ids):
                found, terms = found + targets, []
            result.append(Segment(index, text, ids if len(texts) == 1 else self._encode(text),
                                  self.phrase_ids(found, number, warn) if found else [],
                                  prefix_ids if k == 0 else (),
                                  k == 0 and bool(prefix_ids) and prefix.endswith(" "), terms,
                                  tag))
        return result

    def place_terms(self, segments: list[Segment], cfg: SearchConfig, options: LineOptions,
                    first_line: int, warn: Warn) -> None:
        """Each searched segment's glossary terms put in place in every hypothesis
        (terminology.place_terms, with the links the engine made for them), the alignment shown
        to the user moved to match; a segment where one cannot be placed is searched again
        with its terms as constraints."""
        unplaced = []
        for segment in segments:
            texts = self.tgt_tok.decode([h.tokens for h in segment.found])
            shown = segment.alignments if options.alignment else [[] for _ in texts]
            placed = [place_terms(text, links, segment.terms, pairs)
                      for text, links, pairs in zip(texts, segment.term_links or [], shown)]
            if len(placed) != len(texts) or None in placed:
                unplaced.append(segment)
                continue
            segment.texts = [text for text, _ in placed]
            if options.alignment:
                segment.alignments = [pairs for _, pairs in placed]
        for segment in unplaced:
            targets = list(dict.fromkeys(m.target for m in segment.terms))
            segment.phrases += self.phrase_ids(targets, first_line + segment.line, warn)
            segment.terms = []
        if unplaced:
            self.search_segments(unplaced, cfg, options)

    def decode_found(self, segments: list[Segment]) -> None:
        """Every hypothesis of the segments as text, in one call to the tokenizer (a call per
        segment cost 0.1 s of 1.4 s when greedy search translated Multi30k's test set)."""
        texts = iter(self.tgt_tok.decode([h.tokens for s in segments for h in s.found]))
        for segment in segments:
            segment.texts = [next(texts) for _ in segment.found]

    def cut_to_fit(self, ids: np.ndarray, number: int, warn: Warn | None) -> np.ndarray:
        """Line `number`'s source ids cut to the model's maximum source length, with a warning."""
        if len(ids) <= self.max_source_pieces:
            return ids
        if warn is not None:
            warn(f"line {number}: {len(ids)} pieces, truncated to the model's maximum source "
                 f"length of {self.max_source_pieces}")
        return ids[: self.max_source_pieces]

    def _encode(self, text: str) -> np.ndarray:
        return np.asarray(self.src_tok.encode([text])[0], dtype=np.int64)

    def _fits(self, text: str) -> bool:
        return len(self.src_tok.encode([text])[0]) <= self.max_source_pieces

    def phrase_ids(self, phrases: list[str], number: int, warn: Warn) -> list[Phrase]:
        """Target phrases as piece ids; a phrase the target vocabulary cannot spell is kept (it
        will show as ⁇) with a warning."""
        result = []
        for phrase, ids in zip(phrases, self.tgt_tok.encode(phrases)):
            if not ids:
                raise UserError(f"line {number}: the constraint '{phrase}' has no pieces")
            if UNK_ID in ids:
                warn(f"line {number}: the constraint '{phrase}' has characters the target "
                     "vocabulary lacks; they will show as ⁇")
            result.append(tuple(ids))
        return result

    def prefix_ids(self, prefix: str, number: int, warn: Warn) -> Phrase:
        """A prefix as target piece ids (a prefix ending inside a word is completed from there)."""
        ids = tuple(self.tgt_tok.encode([prefix])[0])
        if UNK_ID in ids:
            warn(f"line {number}: the prefix has characters the target vocabulary lacks; they "
                 "will show as ⁇")
        return ids

    def assemble(self, parts: list[Segment], alignment: bool, line_words: int = 0) -> Translation:
        """One line's Translation from its segments: the n-th entry joins each segment's n-th
        hypothesis (or its last, when it has fewer); scores add up; alignments shift by the
        words before them (`line_words`: the line's whitespace words, which they stay within)."""
        if all(not p.found for p in parts):
            return Translation("", [], [[]] if alignment else None)
        texts = [p.texts if p.texts is not None else
                 self.tgt_tok.decode([h.tokens for h in p.found]) if p.found else [""]
                 for p in parts]
        n = max(len(t) for t in texts)
        nbest, alignments = [], []
        for rank in range(n):
            picked = [min(rank, len(t) - 1) for t in texts]
            score = sum(p.found[k].score for p, k in zip(parts, picked) if p.found)
            nbest.append((score, join_translations([t[k] for t, k in zip(texts, picked)])))
            if alignment:
                alignments.append(shifted_alignment(parts, texts, picked, line_words))
        return Translation(nbest[0][1], nbest, alignments if alignment else None)


@dataclass(frozen=True)
class Line:
    """One input line (stripped) and what goes with it: constraints, prefix, route."""

    number: int  # in the input, from 1
    text: str  # masked (placeholders.py)
    phrases: list[str]
    prefix: str
    route: Route
    masked: Masked


def restored(translation: Translation, masked: Masked) -> Translation:
    """A line's Translation with its protected spans put back in every entry (placeholders.py),
    each entry's alignment shifted to match."""
    if not masked.spans:
        return translation
    nbest, alignments = [], []
    for k, (score, text) in enumerate(translation.nbest):
        pairs = translation.alignments[k] if translation.alignments else None
        text, pairs = masked.restore(text, pairs)
        nbest.append((score, text))
        alignments.append(pairs)
    text = nbest[0][1] if nbest else masked.restore(translation.text)[0]
    return Translation(text, nbest, alignments if translation.alignments is not None else None)


def unchanged(text: str, alignment: bool, nbest: int = 1) -> Translation:
    """A line already in the language asked for is its own translation (as LibreTranslate
    answers a request whose source is its target), `nbest` times, each word aligned with
    itself."""
    pairs = [(i, i) for i in range(len(text.split()))]
    return Translation(text, [(0.0, text)] * nbest if text else [],
                       [pairs] * nbest if alignment else None)


def check_pivot_options(options: LineOptions, line: Line) -> None:
    """What a line translated through a pivot cannot have: words aligned with a source it was
    not translated from, glossary terms of a language it no longer is in."""
    what = "--alignment" if options.alignment else "--glossary" if options.glossary else None
    if what is not None:
        route = line.route
        raise UserError(f"line {line.number}: {route.src}-{route.tgt} goes through "
                        f"{route.steps[0].tgt}, and {what} cannot follow a line through two "
                        "translations; translate into the pivot and from it yourself, or add "
                        "--zero-shot")


class PairedInput:
    """Items that pair with the input lines one to one (constraints, prefixes): each line asks
    for its own, and a stream with too few or too many is an error that names it. Without a
    stream (None), every line gets `default`."""

    def __init__(self, name: str, items: Iterable | None, default: object):
        self.name, self.default = name, default
        self.items = iter(items) if items is not None else None

    def next_for(self, number: int):
        if self.items is None:
            return self.default
        found = next(self.items, None)
        if found is None:
            raise UserError(f"{self.name}: none for input line {number}; give one line (maybe "
                            "empty) per input line")
        return found

    def check_exhausted(self, lines: int) -> None:
        if self.items is not None and next(self.items, None) is not None:
            raise UserError(f"{self.name}: more lines than the {lines} input lines")


def check_markup_options(cfg: SearchConfig, options: LineOptions, constraints: object,
                         prefixes: object, kind: str = "html") -> None:
    """What a document format does not combine with: options that belong to lines of text."""
    for flag, given in (("--alignment", options.alignment), ("--glossary", options.glossary),
                        ("--constraints", constraints), ("--prefix", prefixes),
                        ("--nbest", cfg.nbest > 1)):
        if given:
            raise UserError(f"--format {kind}: not with {flag}, which belongs to lines of text")


def check_sampling_alone(cfg: SearchConfig, constrained: bool) -> None:
    """Constraints steer a beam search; sampling has no beams to deal out."""
    if cfg.sampling and constrained:
        raise UserError("--sample: constraints need beam search; drop --sample, or "
                        "--constraints/--glossary")


def format_alignment(pairs: Alignment) -> str:
    """Pairs as Moses / fast_align print them: [(0, 0), (2, 1)] -> '0-0 2-1' ('' for none)."""
    return " ".join(f"{source}-{target}" for source, target in pairs)


def shifted_alignment(parts: list[Segment], texts: list[list[str]], picked: list[int],
                      line_words: int) -> Alignment:
    """The segments' alignments as one line's: each segment's word indices shifted by the words
    of the segments before it (join_translations joins with single spaces). A line cut where
    there is no space (after 。, or inside an over-long word) has fewer words than its segments
    together: source indices stop at its last word."""
    pairs: Alignment = []
    src_offset = tgt_offset = 0
    last_word = max(line_words - 1, 0)
    for part, part_texts, k in zip(parts, texts, picked):
        if part.alignments:
            pairs += [(min(s + src_offset, last_word), t + tgt_offset)
                      for s, t in part.alignments[k]]
        src_offset += len(part.text.split())
        tgt_offset += len(part_texts[k].split())
    return pairs


def decode_input(raw_lines: Iterable[bytes], name: str, warn: Warn) -> Iterator[str]:
    """Bytes lines -> text lines; invalid UTF-8 is replaced (U+FFFD) with a warning per line."""
    counter = LineCounter()
    for raw in raw_lines:
        counter.lines += 1
        replaced = counter.replaced
        text = decode_line(raw, name, counter, "replace")
        if counter.replaced > replaced:
            warn(f"{name}:{counter.lines}: invalid UTF-8 replaced by U+FFFD")
        yield text
