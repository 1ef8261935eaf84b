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
import torch

from tinytrans.average import resolve_with_average
from tinytrans.checkpoint import load_model_weights
from tinytrans.data import batch_ends, pad_sentences
from tinytrans.errors import UserError
from tinytrans.hardware import autocast, pick_device, pick_precision, set_threads
from tinytrans.model import AttentionWeights, Transformer, padding_mask
from tinytrans.quantize import quantize_dynamic_int8
from tinytrans.config import SearchConfig
from tinytrans.search import Hypothesis, search
from tinytrans.textio import LineCounter, decode_line
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID
from tinytrans.rundir import load_run_config, load_tokenizers

Warn = Callable[[str], None]
# Target tokens of the batch `--precision auto` times (teacher-forced forward passes over
# sentences of 32 tokens): about the rows of a search step's sentences x beams
INFERENCE_PROBE_ROWS = 256


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

    def translate_batch(self, ids: list[np.ndarray], cfg: SearchConfig) -> list[list[Hypothesis]]:
        """Search one batch of source id arrays (without EOS)."""
        src = pad_sentences(ids, [], [EOS_ID]).to(self.device)
        with autocast(self.device, self.precision):
            return search(self.model, src, cfg)

    def translate(self, lines: Iterable[str], cfg: SearchConfig, chunk_lines: int = 2000,
                  warn: Warn | None = None) -> Iterator[Translation]:
        """Translate a stream of lines; yields one Translation per line, in input order.

        Lines are read `chunk_lines` at a time, and batched by length inside a chunk
        (`cfg.batch_tokens` source tokens x beam per batch)."""
        warn = warn or (lambda message: None)
        chunk: list[str] = []
        first_line = 1
        for line in lines:
            chunk.append(line)
            if len(chunk) >= chunk_lines:
                yield from self._translate_chunk(chunk, first_line, cfg, warn)
                first_line += len(chunk)
                chunk = []
        if chunk:
            yield from self._translate_chunk(chunk, first_line, cfg, warn)

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

    def _translate_chunk(self, lines: list[str], first_line: int, cfg: SearchConfig,
                         warn: Warn) -> Iterator[Translation]:
        ids = self.source_ids(lines, first_line, warn)
        results: list[Translation] = [Translation("", [])] * len(lines)
        nonempty = [i for i, x in enumerate(ids) if len(x)]
        for batch in length_batches(nonempty, [len(ids[i]) for i in nonempty], cfg.batch_tokens,
                                  cfg.beam):
            for index, hyps in zip(batch, self.translate_batch([ids[i] for i in batch], cfg)):
                texts = self.tgt_tok.decode([h.tokens for h in hyps])
                results[index] = Translation(texts[0], [(h.score, t) for h, t in zip(hyps, texts)])
        yield from results

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
