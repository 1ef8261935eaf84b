"""Translation of text streams: lines in, exactly one translation out per line, in order.

Lines are read in chunks (one line at a time when a person types them); inside a chunk they are
sorted by length into batches, searched, and put back in input order. Nothing a line contains
can break the alignment: empty lines give empty translations, a line too long for the model is
split into sentences that are translated in the same batches and joined back into one line (or,
with splitting turned off, truncated with a warning), and invalid UTF-8 is replaced with a
warning.

What may come with a line besides its text: target phrases it must contain (constraints.py),
and on the way out the word alignment of its translation (alignment.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tinytrans.alignment import word_alignment
from tinytrans.average import resolve_with_average
from tinytrans.checkpoint import load_model_weights
from tinytrans.config import SearchConfig
from tinytrans.constraints import Phrase, constrained_beam_search
from tinytrans.data import batch_ends, pad_sentences
from tinytrans.errors import UserError
from tinytrans.hardware import autocast, pick_device, pick_precision, set_threads
from tinytrans.model import AttentionWeights, Transformer, padding_mask
from tinytrans.quantize import quantize_dynamic_int8
from tinytrans.rundir import load_run_config, load_tokenizers
from tinytrans.sampling import sample
from tinytrans.search import Hypothesis, search
from tinytrans.sentences import join_translations, split_to_fit
from tinytrans.terminology import Glossary
from tinytrans.textio import LineCounter, decode_line
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

Warn = Callable[[str], None]
# Target tokens of the batch `--precision auto` times (teacher-forced forward passes over
# sentences of 32 tokens): about the rows of a search step's sentences x beams
INFERENCE_PROBE_ROWS = 256


Alignment = list[tuple[int, int]]  # (source word, target word) pairs, by target word


@dataclass(frozen=True)
class Translation:
    text: str  # the best translation ("" for an empty input line)
    nbest: list[tuple[float, str]]  # (score, text), best first
    alignments: list[Alignment] | None = None  # with alignment: one per n-best entry


@dataclass(frozen=True)
class LineOptions:
    """What happens to each line besides the search."""

    split_sentences: bool | None = None  # None: split only lines too long for the model
    alignment: bool = False  # align the words of each translation with its source's
    glossary: Glossary | None = None  # source terms whose target terms become constraints


@dataclass
class Segment:
    """What one batch row translates: a whole line, or one of its sentences."""

    line: int  # index of its line in the chunk
    text: str
    ids: np.ndarray  # source piece ids, without EOS
    phrases: list[Phrase]  # target piece ids the translation must contain
    found: list[Hypothesis] | None = None  # filled by the search
    alignments: list[Alignment] | None = None


class Translator:
    """A trained run loaded for translation: config, tokenizers and one checkpoint's weights."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto",
                 precision: str = "auto", threads: int | None = None):
        run_dir = Path(run_dir)
        self.config = load_run_config(run_dir)
        self.src_tok, self.tgt_tok = load_tokenizers(run_dir, self.config)
        self.device = pick_device(device)
        set_threads(threads)  # only when asked: the thread count is the whole process's
        self.precision_choice = pick_precision(precision, self.device, self.config.model,
                                               inference=True, rows=INFERENCE_PROBE_ROWS)
        self.precision = self.precision_choice.precision
        self.model = Transformer(self.config.model)
        self.checkpoint = resolve_with_average(run_dir, checkpoint)  # best, last, average or a path
        load_model_weights(self.checkpoint, self.model)
        self.model.to(self.device).eval()
        if self.precision == "int8":
            self.model = quantize_dynamic_int8(self.model)
        self.max_source_pieces = self.config.data.max_length

    def translate_batch(self, ids: list[np.ndarray], cfg: SearchConfig,
                        phrases: list[list[Phrase]] | None = None) -> list[list[Hypothesis]]:
        """Search one batch of source id arrays (without EOS): sampled when cfg says so,
        constrained when some sentence has phrases, else beam (or greedy) search."""
        src = pad_sentences(ids, [], [EOS_ID]).to(self.device)
        with autocast(self.device, self.precision):
            if cfg.sampling:
                return sample(self.model, src, cfg)
            if phrases is not None and any(phrases):
                return constrained_beam_search(self.model, src, cfg, phrases)
            return search(self.model, src, cfg)

    def translate(self, lines: Iterable[str], cfg: SearchConfig, chunk_lines: int = 2000,
                  warn: Warn | None = None, options: LineOptions = LineOptions(),
                  constraints: Iterable[list[str]] | None = None) -> Iterator[Translation]:
        """Translate a stream of lines; yields one Translation per line, in input order.

        Lines are read `chunk_lines` at a time, and batched by length inside a chunk
        (`cfg.batch_tokens` source tokens x beam per batch). `constraints`, when given, pairs
        with `lines`: the target phrases of each line (a list, maybe empty), and must have as
        many items."""
        warn = warn or (lambda message: None)
        if cfg.sampling and (constraints is not None or options.glossary is not None):
            raise UserError("--sample: constraints need beam search; drop --sample, or the "
                            "constraints and glossary")
        phrases = iter(constraints) if constraints is not None else None
        chunk: list[tuple[str, list[str]]] = []
        first_line = 1
        for line in lines:
            chunk.append((line, self._line_phrases(phrases, first_line + len(chunk))))
            if len(chunk) >= chunk_lines:
                yield from self._translate_chunk(chunk, first_line, cfg, warn, options)
                first_line += len(chunk)
                chunk = []
        if chunk:
            yield from self._translate_chunk(chunk, first_line, cfg, warn, options)
        if phrases is not None and next(phrases, None) is not None:
            raise UserError(f"constraints: more lines than the {first_line + len(chunk) - 1} "
                            "input lines")

    @staticmethod
    def _line_phrases(phrases: Iterator[list[str]] | None, number: int) -> list[str]:
        if phrases is None:
            return []
        found = next(phrases, None)
        if found is None:
            raise UserError(f"constraints: none for input line {number}; give one line of "
                            "constraints (maybe empty) per input line")
        return found

    def source_ids(self, lines: list[str], first_line: int = 1,
                   warn: Warn | None = None) -> list[np.ndarray]:
        """Piece ids of each line (without EOS), cut to the model's maximum source length."""
        ids = [np.asarray(x, dtype=np.int64) for x in self.src_tok.encode([s.strip() for s in lines])]
        for offset, piece_ids in enumerate(ids):
            if len(piece_ids) > self.max_source_pieces:
                if warn is not None:
                    warn(f"line {first_line + offset}: {len(piece_ids)} pieces, truncated to the "
                         f"model's maximum source length of {self.max_source_pieces}")
                ids[offset] = piece_ids[: self.max_source_pieces]
        return ids

    def _translate_chunk(self, chunk: list[tuple[str, list[str]]], first_line: int,
                         cfg: SearchConfig, warn: Warn,
                         options: LineOptions) -> Iterator[Translation]:
        segments = [segment for index, (line, phrases) in enumerate(chunk)
                    for segment in self.segments(index, first_line + index, line, phrases,
                                                 options, warn)]
        nonempty = [i for i, s in enumerate(segments) if len(s.ids)]
        for batch in length_batches(nonempty, [len(segments[i].ids) for i in nonempty],
                                    cfg.batch_tokens, cfg.rows_per_sentence):
            rows = [segments[i] for i in batch]
            phrases = [s.phrases for s in rows]
            for segment, hyps in zip(rows, self.translate_batch([s.ids for s in rows], cfg,
                                                                phrases)):
                segment.found = hyps
            if options.alignment:
                self.align(rows)
        by_line: list[list[Segment]] = [[] for _ in chunk]
        for segment in segments:
            by_line[segment.line].append(segment)
        for parts in by_line:
            yield self.assemble(parts, options.alignment)

    def segments(self, index: int, number: int, line: str, phrases: list[str],
                 options: LineOptions, warn: Warn) -> list[Segment]:
        """A line as the segments it is translated in: itself, or its sentences when it is too
        long for the model (or always, with options.split_sentences)."""
        line = line.strip()
        ids = self._encode(line)
        texts = [line]
        if options.split_sentences or (options.split_sentences is None
                                       and len(ids) > self.max_source_pieces):
            texts = split_to_fit(line, self._fits, self.config.data.src) or [""]
        elif len(ids) > self.max_source_pieces:
            warn(f"line {number}: {len(ids)} pieces, truncated to the model's maximum source "
                 f"length of {self.max_source_pieces}")
            ids = ids[: self.max_source_pieces]
        if len(texts) > 1 and phrases:
            warn(f"line {number}: split into {len(texts)} sentences; its constraints go with "
                 "the first")
        result = []
        for k, text in enumerate(texts):
            found = list(phrases if k == 0 else [])
            if options.glossary is not None:
                found += [t for t in options.glossary.constraints_for(text) if t not in found]
            result.append(Segment(index, text, ids if len(texts) == 1 else self._encode(text),
                                  self.phrase_ids(found, number, warn)))
        return result

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

    def align(self, segments: list[Segment]) -> None:
        """Word alignments of every hypothesis of the segments, from the cross-attention the
        model computes along each (attention.record_attention: the weights of the search)."""
        from tinytrans.attention import record_attention  # attention.py imports this module

        sources = [s.ids for s in segments for _ in s.found]
        targets = [h.tokens for s in segments for h in s.found]
        with autocast(self.device, self.precision):
            recorded = iter(record_attention(self.model, self.src_tok, self.tgt_tok, sources,
                                             targets, self.device))
        for segment in segments:
            segment.alignments = []
            for _ in segment.found:
                found = next(recorded)
                segment.alignments.append(word_alignment(
                    found.cross, found.source[:-1], found.target[:-1],
                    source_text=segment.text, target_text=found.translation))

    def assemble(self, parts: list[Segment], alignment: bool) -> Translation:
        """One line's Translation from its segments: the n-th entry joins each segment's n-th
        hypothesis (or its last, when it has fewer); scores add up; alignments shift by the
        words before them."""
        if all(not p.found for p in parts):
            return Translation("", [], [[]] if alignment else None)
        texts = [self.tgt_tok.decode([h.tokens for h in p.found]) if p.found else [""]
                 for p in parts]
        n = max(len(t) for t in texts)
        nbest, alignments = [], []
        for rank in range(n):
            picked = [min(rank, len(t) - 1) for t in texts]
            score = sum(p.found[k].score for p, k in zip(parts, picked) if p.found)
            nbest.append((score, join_translations([t[k] for t, k in zip(texts, picked)])))
            if alignment:
                alignments.append(shifted_alignment(parts, texts, picked))
        return Translation(nbest[0][1], nbest, alignments if alignment else None)


    def score(self, sources: list[str], targets: list[str],
              batch_tokens: int = SearchConfig.batch_tokens,
              warn: Warn | None = None) -> list[list[float]]:
        """Forced decoding: for each pair, the log-probability of every target piece, then EOS's.

        Sources are cut to the model's maximum length as for translation; targets are scored whole.
        """
        if len(sources) != len(targets):
            raise UserError(f"{len(sources)} sources but {len(targets)} targets: they must pair up")
        src_ids = self.source_ids(sources, warn=warn)
        tgt_ids = [np.asarray(x, dtype=np.int64)
                   for x in self.tgt_tok.encode([t.strip() for t in targets])]
        results: list[list[float]] = [[] for _ in sources]
        lengths = [max(len(s), len(t)) for s, t in zip(src_ids, tgt_ids)]
        for batch in length_batches(list(range(len(sources))), lengths, batch_tokens, beam=1):
            src = pad_sentences([src_ids[i] for i in batch], [], [EOS_ID]).to(self.device)
            with autocast(self.device, self.precision):
                scores = forced_log_probs(self.model, src, [tgt_ids[i] for i in batch])
            for index, row in zip(batch, scores):
                results[index] = row.tolist()
        return results


def shifted_alignment(parts: list[Segment], texts: list[list[str]],
                      picked: list[int]) -> Alignment:
    """The segments' alignments as one line's: each segment's word indices shifted by the words
    of the segments before it (join_translations joins with single spaces)."""
    pairs: Alignment = []
    src_offset = tgt_offset = 0
    for part, part_texts, k in zip(parts, texts, picked):
        if part.alignments:
            pairs += [(s + src_offset, t + tgt_offset) for s, t in part.alignments[k]]
        src_offset += len(part.text.split())
        tgt_offset += len(part_texts[k].split())
    return pairs


@torch.inference_mode()
def forced_log_probs(model: Transformer, src: torch.Tensor, targets: list[np.ndarray],
                     weights_out: AttentionWeights | None = None) -> list[torch.Tensor]:
    """Teacher-forced decoding of given targets: the log-probability of each piece and of EOS.

    src: (B, S) ids ending with EOS; targets: B id arrays without BOS/EOS. The decoder reads
    BOS + target and predicts target + EOS, so sentence b gets len(targets[b]) + 1 log-probs (a
    float32 tensor on the CPU). These are the numbers beam search adds up along a hypothesis:
    search's log_prob of a hypothesis equals their sum. With `weights_out`, the encoder and the
    decoder record their attention weights on the way.
    """
    tgt_in = pad_sentences(targets, [BOS_ID], []).to(src.device)  # (B, T)
    tgt_out = pad_sentences(targets, [], [EOS_ID]).to(src.device)  # (B, T)
    src_mask = padding_mask(src)
    memory = model.encode(src, src_mask, weights_out)
    states = model.decode(tgt_in, memory, src_mask, weights_out=weights_out)  # (B, T, D)
    log_probs = model.logits(states).float().log_softmax(dim=-1)  # (B, T, V)
    picked = log_probs.gather(-1, tgt_out[..., None])[..., 0].cpu()  # (B, T)
    lengths = (tgt_out != PAD_ID).sum(dim=1).tolist()
    return [row[:n] for row, n in zip(picked, lengths)]


def length_batches(indices: list[int], lengths: list[int], batch_tokens: int,
                   beam: int) -> Iterator[list[int]]:
    """Group indices of similar length so that sentences x beam x (longest length + 1) <=
    batch_tokens: data.batch_ends, training's batcher, over the lengths sorted, with the beam's
    share of the budget (each sentence is searched `beam` times)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")  # shortest first; equal lengths in input order
    start = 0
    for end in batch_ends(lengths[order], lengths[order], batch_tokens // beam):
        yield [indices[j] for j in order[start:end]]
        start = end


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
