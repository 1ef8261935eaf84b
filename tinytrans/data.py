"""Parallel data as ids: filtering, compact storage and token-based batches.

An encoded corpus keeps every side as one flat array of piece ids plus an offsets array (sentence
i is `ids[offsets[i]:offsets[i + 1]]`), in the smallest integer type the vocabulary fits. A million
pairs of ~15 pieces then take about 60 MB instead of gigabytes of Python lists.

Batches are lists of pair indices. Pairs are sorted by length (ties broken at random) so each
batch holds pairs of similar length and little padding; the batch order is shuffled each epoch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from tinytrans.config import DataConfig
from tinytrans.errors import UserError
from tinytrans.lengths import batch_ends
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, seed_sampling

ENCODE_CHUNK = 10_000  # pairs handed to SentencePiece at a time: bounded memory, fast batch calls


@dataclass(frozen=True)
class FilterConfig:
    """Which training pairs are kept. Lengths are counted in pieces, without BOS/EOS."""

    max_length: int = DataConfig.max_length
    max_ratio: float = DataConfig.max_ratio  # longer side / shorter side, in pieces


# Very short pairs (a name, a number) legitimately have extreme ratios: the ratio rule only
# applies once the longer side has more than this many units.
RATIO_MIN_LENGTH = 5


def is_ratio_outlier(src_length: int, tgt_length: int, max_ratio: float) -> bool:
    """True when the longer side has more than `max_ratio` times the units of the shorter (pieces
    when training, words in `corpus check`): most likely a misaligned pair."""
    longer, shorter = max(src_length, tgt_length), min(src_length, tgt_length)
    return longer > RATIO_MIN_LENGTH and longer > max_ratio * shorter


@dataclass
class FilterStats:
    read: int = 0
    kept: int = 0
    empty: int = 0
    too_long: int = 0
    bad_ratio: int = 0

    @property
    def dropped(self) -> int:
        return self.empty + self.too_long + self.bad_ratio


@dataclass
class RaggedIds:
    """Sentences of ids stored flat: sentence i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]: self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.offsets.nbytes


@dataclass
class EncodedCorpus:
    src: RaggedIds
    tgt: RaggedIds
    stats: FilterStats = field(default_factory=FilterStats)
    # a multilingual corpus: its directions' pairs laid end to end, as (src, tgt, pairs) in order
    parts: list[tuple[str, str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.src)


def with_tag(ragged: RaggedIds, tag: int) -> RaggedIds:
    """Every sentence with the id `tag` in front (a multilingual source's target-language tag)."""
    lengths = ragged.lengths + 1
    offsets = np.zeros(len(ragged) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.empty(int(offsets[-1]), dtype=np.result_type(ragged.ids.dtype, id_dtype(tag + 1)))
    ids[offsets[:-1]] = tag
    rest = np.ones(len(ids), dtype=bool)
    rest[offsets[:-1]] = False
    ids[rest] = ragged.ids
    return RaggedIds(ids, offsets)


def concatenate(raggeds: list[RaggedIds]) -> RaggedIds:
    """The sentences of every RaggedIds, in order, as one."""
    ids = np.concatenate([r.ids for r in raggeds])
    lengths = np.concatenate([r.lengths for r in raggeds])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return RaggedIds(ids, offsets)


def gather(ragged: RaggedIds, indices: np.ndarray) -> RaggedIds:
    """Sentences `indices` (repeats allowed), in that order, as a new RaggedIds."""
    starts, lengths = ragged.offsets[indices], ragged.lengths[indices]
    offsets = np.zeros(len(indices) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # position j of the result reads starts[sentence of j] + (j - offsets[sentence of j])
    sentence = np.repeat(np.arange(len(indices)), lengths)
    positions = starts[sentence] + np.arange(int(offsets[-1])) - offsets[sentence]
    return RaggedIds(ragged.ids[positions], offsets)


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class _RaggedBuilder:
    """Collects encoded sentences chunk by chunk, then joins them into one RaggedIds."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.chunks: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []

    def add(self, sentences: list[list[int]]) -> None:
        if sentences:
            self.chunks.append(np.fromiter(
                (i for s in sentences for i in s), dtype=self.dtype, count=sum(map(len, sentences))))
            self.lengths.append(np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences)))

    def build(self) -> RaggedIds:
        ids = np.concatenate(self.chunks) if self.chunks else np.zeros(0, self.dtype)
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return RaggedIds(ids, offsets)


def encode_parallel(
    pairs: Iterable[tuple[str, str]],
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    filters: FilterConfig | None = None,
    sampling_alpha: float = 0.0,
) -> EncodedCorpus:
    """Encode a stream of text pairs; with `filters`, drop unusable pairs and count why.

    Without filters every pair is kept (validation and test sets must stay aligned with their
    references), except that it still has to be encodable. `sampling_alpha` > 0 samples each
    segmentation (Tokenizer.encode).
    """
    stats = FilterStats()
    src_out = _RaggedBuilder(id_dtype(src_tokenizer.vocab_size))
    tgt_out = _RaggedBuilder(id_dtype(tgt_tokenizer.vocab_size))
    for chunk in chunks_of(pairs, ENCODE_CHUNK):
        src_ids = src_tokenizer.encode([s for s, _ in chunk], sampling_alpha)
        tgt_ids = tgt_tokenizer.encode([t for _, t in chunk], sampling_alpha)
        stats.read += len(chunk)
        if filters is not None:
            src_ids, tgt_ids = _keep_trainable(src_ids, tgt_ids, filters, stats)
        stats.kept += len(src_ids)
        src_out.add(src_ids)
        tgt_out.add(tgt_ids)
    return EncodedCorpus(src_out.build(), tgt_out.build(), stats)


class ResampledCorpus:
    """The training pairs, segmented anew for every epoch by sampling (subword regularization:
    Kudo, 2018; Provilkov et al., 2020): the model sees each word split in several ways, which
    regularizes it the way dropout does, at the input.

    Keeps the text in memory. Epoch e's segmentation follows from (seed, e) alone, so a resumed
    run, and every process of a distributed one, gets the same batches. A pair is kept or dropped
    by the filters on each epoch's segmentation.
    """

    def __init__(self, pairs: list[tuple[str, str]], src_tokenizer: Tokenizer,
                 tgt_tokenizer: Tokenizer, filters: FilterConfig, sampling_alpha: float, seed: int):
        self.pairs, self.filters, self.sampling_alpha, self.seed = pairs, filters, sampling_alpha, seed
        self.tokenizers = (src_tokenizer, tgt_tokenizer)

    def __call__(self, epoch: int) -> EncodedCorpus:
        """Epoch `epoch`'s segmentation (training asks once per epoch)."""
        seed_sampling((self.seed * 1_000_003 + epoch) % 2**32)
        return encode_parallel(self.pairs, *self.tokenizers, self.filters, self.sampling_alpha)


def _keep_trainable(
    src_ids: list[list[int]], tgt_ids: list[list[int]], filters: FilterConfig, stats: FilterStats
) -> tuple[list[list[int]], list[list[int]]]:
    kept_src, kept_tgt = [], []
    for s, t in zip(src_ids, tgt_ids):
        if not s or not t:
            stats.empty += 1
        elif len(s) > filters.max_length or len(t) > filters.max_length:
            stats.too_long += 1
        elif is_ratio_outlier(len(s), len(t), filters.max_ratio):
            stats.bad_ratio += 1
        else:
            kept_src.append(s)
            kept_tgt.append(t)
    return kept_src, kept_tgt


def chunks_of(items: Iterable, size: int) -> Iterator[list]:
    """`items` in lists of `size` (the last may be shorter), read lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# ---------------------------------------------------------------------------------------------
# Batching

def padded_size(n_pairs: int, max_src: int, max_tgt: int) -> int:
    """Tokens a batch occupies, padding included: its larger side, with EOS (source) or BOS/EOS."""
    return n_pairs * max(max_src + 1, max_tgt + 1)


def length_sorted_batches(
    src_lengths: np.ndarray, tgt_lengths: np.ndarray, batch_tokens: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """Split all pair indices into batches of at most `batch_tokens` padded tokens.

    Every index appears in exactly one batch. The same (seed, epoch) gives the same batches, which
    is what lets an interrupted run resume at the exact batch where it stopped.
    """
    if batch_tokens < 1:
        raise UserError(f"--batch-tokens: {batch_tokens} must be positive")
    rng = np.random.default_rng([seed, epoch])
    # Random order first, then a stable sort by (source, target) length: equal lengths stay shuffled.
    order = rng.permutation(len(src_lengths))
    order = order[np.lexsort((tgt_lengths[order], src_lengths[order]))]
    ends = batch_ends(src_lengths[order], tgt_lengths[order], batch_tokens)
    batches = np.split(order, ends[:-1]) if ends else []
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class Batch:
    """Padded id tensors of one batch. Source ends with EOS; target input starts with BOS and
    target output (what the model must predict) ends with EOS."""

    src: torch.Tensor  # (B, S)
    tgt_in: torch.Tensor  # (B, T)
    tgt_out: torch.Tensor  # (B, T)
    indices: np.ndarray

    @property
    def n_tgt_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.indices)


def pad_sentences(sentences: list[np.ndarray], prefix: list[int], suffix: list[int]) -> torch.Tensor:
    """Stack id sequences into a (B, L) int64 tensor, padded on the right with PAD_ID."""
    width = max(len(s) for s in sentences) + len(prefix) + len(suffix)
    out = np.full((len(sentences), width), PAD_ID, dtype=np.int64)
    for row, ids in enumerate(sentences):
        full = np.concatenate([prefix, ids, suffix]) if prefix or suffix else ids
        out[row, : len(full)] = full
    return torch.from_numpy(out)


def make_batch(corpus: EncodedCorpus, indices: np.ndarray) -> Batch:
    src = [corpus.src[i] for i in indices]
    tgt = [corpus.tgt[i] for i in indices]
    return Batch(
        src=pad_sentences(src, [], [EOS_ID]),
        tgt_in=pad_sentences(tgt, [BOS_ID], []),
        tgt_out=pad_sentences(tgt, [], [EOS_ID]),
        indices=indices,
    )


def padding_ratio(corpus: EncodedCorpus, batches: list[np.ndarray]) -> float:
    """Share of padding in all batch tensors (source and target together)."""
    real = padded = 0
    src_len, tgt_len = corpus.src.lengths + 1, corpus.tgt.lengths + 1
    for indices in batches:
        real += int(src_len[indices].sum() + tgt_len[indices].sum())
        padded += len(indices) * int(src_len[indices].max() + tgt_len[indices].max())
    return 1.0 - real / padded if padded else 0.0


@dataclass
class ValidationSet:
    """Validation pairs with pieces on both sides, and their references, in one order."""

    corpus: EncodedCorpus
    references: list[str]


def encode_validation(pairs: list[tuple[str, str]], src_tok: Tokenizer,
                      tgt_tok: Tokenizer) -> ValidationSet:
    """The pairs with pieces on both sides, encoded, and their target lines as references.

    A pair is dropped when either side encodes to no pieces (an empty or blank line, or only
    characters the tokenizer's normalisation removes, such as a zero-width space): a loss or a
    translation of nothing means nothing. Pairs and references are taken from the same kept list,
    so hypothesis i is always scored against reference i.
    """
    src_ids = src_tok.encode([s for s, _ in pairs])
    tgt_ids = tgt_tok.encode([t for _, t in pairs])
    kept = [pair for pair, s, t in zip(pairs, src_ids, tgt_ids) if s and t]
    corpus = encode_parallel(iter(kept), src_tok, tgt_tok)  # no filters: one entry per kept pair
    return ValidationSet(corpus, [t for _, t in kept])
