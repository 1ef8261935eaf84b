"""Translation with the PyTorch model: lines in, exactly one translation out per line, in order.

lines.LineTranslator reads the lines, splits them into sentences, cuts the segments into batches
by length and assembles each line's translation again; here each batch is searched by the one
search loop (search_loop.run_search) with the strategy it needs: beam or greedy search
(search.py), with constraints (constraints.py), or sampled (sampling.py). The word alignments
come from the cross-attention along each hypothesis (alignment.py).
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from tinytrans.alignment import PLACEMENT_LAYERS, links_both_ways, word_alignment
from tinytrans.average import resolve_with_average
from tinytrans.checkpoint import load_model_weights
from tinytrans.config import SearchConfig
from tinytrans.constraints import Constrained
from tinytrans.data import pad_sentences
from tinytrans.errors import UserError
from tinytrans.hardware import (Probe, autocast, pick_device, pick_precision, set_threads,
                                time_both_ways)
from tinytrans.lengths import length_batches
from tinytrans.lines import (AttentionShape, LineOptions, LineTranslator, Phrase,  # noqa: F401
                             Segment, Translation, Warn, decode_input)
from tinytrans.model import AttentionWeights, Transformer, padding_mask
from tinytrans.quantize import quantize_dynamic_int8
from tinytrans.rundir import check_tokenizers, load_run_config, load_tokenizers, run_directions
from tinytrans.sampling import Sampling
from tinytrans.search import Beam, Greedy, Hypothesis, search
from tinytrans.search_loop import NewWord, Strategy, run_search
from tinytrans.terminology import TermLinks
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID

# What `--precision auto` times in both precisions: real beam searches (beam 5, the key/value
# cache, finished rows leaving the batch) of batches of random source sentences; the first batch
# warms up
DECODING_TRIAL_BATCHES = 5
DECODING_TRIAL_SHAPE = (16, 20)  # sentences x source pieces per batch


class Translator(LineTranslator):
    """A trained run loaded for translation: config, tokenizers and one checkpoint's weights."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto",
                 precision: str = "auto", threads: int | None = None):
        run_dir = Path(run_dir)
        self.config = load_run_config(run_dir)
        data = self.config.data
        super().__init__(*load_tokenizers(run_dir, self.config), data.max_length,
                         run_directions(data), run_dir)
        self.device = pick_device(device)
        set_threads(threads)  # only when asked: the thread count is the whole process's
        self.model = Transformer(self.config.model)
        self.checkpoint = resolve_with_average(run_dir, checkpoint)  # best, last, average or a path
        check_tokenizers(run_dir, self.config, (self.src_tok, self.tgt_tok), self.checkpoint)
        load_model_weights(self.checkpoint, self.model)
        self.model.to(self.device).eval()
        work = (f"{self.config.model.describe()}; beam 5 on {DECODING_TRIAL_SHAPE[0]}x"
                f"{DECODING_TRIAL_SHAPE[1]} pieces")
        self.precision_choice = pick_precision(precision, self.device,
                                               decoding_probe(self.model, self.device), work,
                                               inference=True)
        self.precision = self.precision_choice.precision
        if self.precision == "int8":
            self.model = quantize_dynamic_int8(self.model)

    @cached_property
    def word_starts(self) -> torch.Tensor:
        """(V,) bool: the target pieces that begin a word (SentencePiece marks them with ▁),
        and EOS: what may follow a prefix whose last word is finished."""
        starts = [piece.startswith("\u2581") for piece in self.tgt_tok.pieces()]
        starts[EOS_ID] = True
        return torch.tensor(starts, dtype=torch.bool)

    def aligns(self) -> bool:
        return True

    def attention_shape(self) -> AttentionShape:
        model = self.config.model
        return AttentionShape(model.n_decoder_layers, model.n_heads)

    def translate_batch(self, ids: list[np.ndarray], cfg: SearchConfig,
                        phrases: list[list[Phrase]] | None = None,
                        prefixes: list[Phrase] | None = None) -> list[list[Hypothesis]]:
        """Search one batch of source id arrays (without EOS), with each sentence's phrases and
        prefix when given: search_batch for ids rather than segments."""
        segments = [Segment(0, "", x, list(p), tuple(start)) for x, p, start in
                    zip(ids, phrases or [[]] * len(ids), prefixes or [()] * len(ids), strict=True)]
        self.search_batch(segments, cfg, LineOptions())
        return [segment.found for segment in segments]

    def source_ids(self, lines: list[str], first_line: int = 1,
                   warn: Warn | None = None) -> list[np.ndarray]:
        """Piece ids of each line (without EOS), cut to the model's maximum source length."""
        ids = self.src_tok.encode([s.strip() for s in lines])
        return [self.cut_to_fit(np.asarray(x, dtype=np.int64), first_line + offset, warn)
                for offset, x in enumerate(ids)]

    def search_batch(self, segments: list[Segment], cfg: SearchConfig,
                     options: LineOptions) -> None:
        """One batch searched at once by the strategy cfg asks for: sampled, constrained when
        some segment has phrases, else beam (or greedy) search; each hypothesis begins with its
        segment's prefix. Aligned when options ask, or when glossary terms are to be placed."""
        ids, phrases = [s.source for s in segments], [s.phrases for s in segments]
        src = pad_sentences(ids, [], [EOS_ID]).to(self.device)  # (N, S)
        if cfg.sampling:
            cfg = replace(cfg, seed=batch_seed(cfg.seed, ids))
            strategy: Strategy = Sampling(len(ids), cfg, self.device)
        elif any(phrases):
            strategy = Constrained(cfg, phrases, self.device)
        elif cfg.beam == 1:
            strategy = Greedy(len(ids), cfg)
        else:
            strategy = Beam(len(ids), cfg, self.device)
        new_word = NewWord([s.prefix_ends_word for s in segments], self.word_starts) \
            if any(s.prefix_ends_word for s in segments) else None
        with autocast(self.device, self.precision):
            found = run_search(self.model, src, cfg, strategy, [s.prefix for s in segments],
                               new_word)
        for segment, hyps in zip(segments, found, strict=True):
            segment.found = hyps
        if options.alignment or any(s.terms for s in segments):  # terms are placed by them
            self.align(segments, shown=options.alignment)

    def align(self, segments: list[Segment], shown: bool = True) -> None:
        """Word alignments of every hypothesis of the segments, from the cross-attention along
        each: teacher-forced on the hypothesis, every decoder step sees what it saw in the
        search (as attention.py explains), so these are the weights that chose each piece.
        `shown`: the alignments the user asked for; segments with glossary terms also get the
        links that place them (Segment.term_links)."""
        sources = [s.source for s in segments for _ in s.found]
        tags = [len(s.tag) for s in segments for _ in s.found]  # columns that are no word
        targets = [np.asarray(h.tokens, dtype=np.int64) for s in segments for h in s.found]
        src = pad_sentences(sources, [], [EOS_ID]).to(self.device)
        recorded = AttentionWeights()
        with autocast(self.device, self.precision):
            forced_log_probs(self.model, src, targets, recorded)
        cross = torch.stack(recorded.cross, dim=1).float().cpu()  # (B, L, H, T, S)
        row = 0
        for segment in segments:
            segment.alignments, segment.term_links = [], []
            for hyp in segment.found:
                S, T = len(sources[row]) + 1, len(hyp.tokens) + 1  # with </s>; the rest: padding
                args = (cross[row, :, :, :T, tags[row]:S],
                        self.src_tok.sp.id_to_piece(segment.ids.tolist()),
                        self.tgt_tok.sp.id_to_piece(hyp.tokens))
                texts = dict(source_text=segment.text,
                             target_text=self.tgt_tok.decode([hyp.tokens])[0])
                if shown:
                    segment.alignments.append(word_alignment(*args, **texts))
                if segment.terms:  # both ways, from the layers that place terms best
                    segment.term_links.append(TermLinks(
                        *links_both_ways(*args, layer=PLACEMENT_LAYERS, **texts)))
                row += 1

    def score(self, sources: list[str], targets: list[str],
              batch_tokens: int = SearchConfig.batch_tokens,
              warn: Warn | None = None, tag: Phrase = ()) -> list[list[float]]:
        """Forced decoding: for each pair, the log-probability of every target piece, then EOS's.

        Sources are cut to the model's maximum length as for translation (and begin with `tag`,
        a multilingual model's target tag); targets are scored whole.
        """
        if len(sources) != len(targets):
            raise UserError(f"{len(sources)} sources but {len(targets)} targets: they must pair up")
        src_ids = [np.concatenate([np.asarray(tag, dtype=np.int64), ids]) if tag else ids
                   for ids in self.source_ids(sources, warn=warn)]
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


def batch_seed(seed: int, ids: list[np.ndarray]) -> int:
    """The sampling seed of one batch: the user's seed mixed with the batch's source ids, so
    that every batch draws its own numbers (one seed for all would give the first row of every
    batch the same draws), and the same input with the same seed draws the same again."""
    checksum = zlib.crc32(b"".join(np.asarray(x, dtype=np.int64).tobytes() + b"|" for x in ids))
    return (seed * 2_654_435_761 + checksum) % 2**63


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


def decoding_probe(model: Transformer, device: torch.device) -> Probe:
    """`--precision auto`'s measurement for translation: the model's real beam search in fp32
    and in bf16 on the same batches of random source sentences (hardware.time_both_ways), the
    work counted in target pieces found."""
    def probe() -> float:
        generator = torch.Generator().manual_seed(0)
        vocab = model.cfg.src_vocab_size
        words = [torch.randint(EOS_ID + 1, max(vocab, EOS_ID + 2), DECODING_TRIAL_SHAPE,
                               generator=generator) for _ in range(DECODING_TRIAL_BATCHES)]
        eos = torch.full((DECODING_TRIAL_SHAPE[0], 1), EOS_ID)
        sources = [torch.cat([batch, eos], dim=1) for batch in words]  # (B, S + 1), as searched

        def decode(precision: str, piece: int) -> int:
            with torch.inference_mode(), autocast(device, precision):
                found = search(model, sources[piece].to(device), SearchConfig(beam=5))
            return sum(len(hyps[0].tokens) + 1 for hyps in found)
        return time_both_ways(decode, DECODING_TRIAL_BATCHES)
    return probe
