"""Translation of text streams: lines in, exactly one translation out per line, in order.

Lines are read in chunks (one line at a time when a person types them); inside a chunk they are
sorted by length into batches, searched, and put back in input order. Nothing a line contains
can break the alignment: empty lines give empty translations, over-long lines are truncated with
a warning, and invalid UTF-8 is replaced with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinytrans.checkpoint import load_model_weights, resolve_checkpoint
from tinytrans.data import pad_sentences
from tinytrans.errors import UserError
from tinytrans.hardware import autocast, pick_device, pick_precision, set_threads
from tinytrans.model import Transformer
from tinytrans.quantize import quantize_dynamic_int8
from tinytrans.search import Hypothesis, SearchConfig, search
from tinytrans.textio import LineCounter, decode_line
from tinytrans.tokenizer import EOS_ID
from tinytrans.rundir import load_run_config, load_tokenizers

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Translation:
    text: str  # the best translation ("" for an empty input line)
    nbest: list[tuple[float, str]]  # (score, text), best first


class Translator:
    """A trained run loaded for translation: config, tokenizers and one checkpoint's weights."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto",
                 precision: str = "auto", threads: int | None = None):
        run_dir = Path(run_dir)
        self.config = load_run_config(run_dir)
        self.src_tok, self.tgt_tok = load_tokenizers(run_dir, self.config)
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device, inference=True)
        set_threads(threads)
        self.model = Transformer(self.config.model)
        self.checkpoint = resolve_checkpoint(run_dir, checkpoint)
        load_model_weights(self.checkpoint, self.model)
        self.model.to(self.device).eval()
        if self.precision == "int8":
            self.model = quantize_dynamic_int8(self.model)
        self.max_source_pieces = self.config.data.max_length

    def translate_batch(self, ids: list[np.ndarray], cfg: SearchConfig) -> list[list[Hypothesis]]:
        """Search one batch of source id arrays (without EOS)."""
        src = pad_sentences(ids, [], [EOS_ID]).to(self.device)
        with autocast(self.device, self.precision):
            return search(self.model, src, cfg)

    def translate(self, lines: Iterable[str], cfg: SearchConfig, batch_tokens: int = 4096,
                  chunk_lines: int = 2000, warn: Warn | None = None) -> Iterator[Translation]:
        """Translate a stream of lines; yields one Translation per line, in input order."""
        warn = warn or (lambda message: None)
        chunk: list[str] = []
        first_line = 1
        for line in lines:
            chunk.append(line)
            if len(chunk) >= chunk_lines:
                yield from self._translate_chunk(chunk, first_line, cfg, batch_tokens, warn)
                first_line += len(chunk)
                chunk = []
        if chunk:
            yield from self._translate_chunk(chunk, first_line, cfg, batch_tokens, warn)

    def _translate_chunk(self, lines: list[str], first_line: int, cfg: SearchConfig,
                         batch_tokens: int, warn: Warn) -> Iterator[Translation]:
        ids = [np.asarray(x, dtype=np.int64) for x in self.src_tok.encode([s.strip() for s in lines])]
        for offset, piece_ids in enumerate(ids):
            if len(piece_ids) > self.max_source_pieces:
                warn(f"line {first_line + offset}: {len(piece_ids)} pieces, truncated to the "
                     f"model's maximum source length of {self.max_source_pieces}")
                ids[offset] = piece_ids[: self.max_source_pieces]
        results: list[Translation] = [Translation("", [])] * len(lines)
        nonempty = [i for i, x in enumerate(ids) if len(x)]
        for batch in length_batches(nonempty, [len(ids[i]) for i in nonempty], batch_tokens, cfg.beam):
            for index, hyps in zip(batch, self.translate_batch([ids[i] for i in batch], cfg)):
                texts = self.tgt_tok.decode([h.tokens for h in hyps])
                results[index] = Translation(texts[0], [(h.score, t) for h, t in zip(hyps, texts)])
        yield from results


def length_batches(indices: list[int], lengths: list[int], batch_tokens: int,
                   beam: int) -> Iterator[list[int]]:
    """Group indices of similar length so that sentences x beam x longest length <= batch_tokens."""
    order = sorted(range(len(indices)), key=lambda i: lengths[i])
    batch: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i] + 1)
        if batch and (len(batch) + 1) * new_longest * beam > batch_tokens:
            yield [indices[j] for j in batch]
            batch, new_longest = [], lengths[i] + 1
        batch.append(i)
        longest = new_longest
    if batch:
        yield [indices[j] for j in batch]


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


def load_search_config(beam: int, nbest: int, lenpen: float, max_len_a: float,
                       max_len_b: int) -> SearchConfig:
    if beam < 1:
        raise UserError(f"--beam: {beam} must be at least 1")
    if not 1 <= nbest <= beam:
        raise UserError(f"--nbest: {nbest} must lie between 1 and --beam ({beam})")
    if max_len_a < 0 or max_len_b < 1:
        raise UserError("--max-len-a must be >= 0 and --max-len-b >= 1")
    return SearchConfig(beam=beam, nbest=nbest, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b)


