"""Batches by length within a token budget: the one batcher of training, translation and the
CTranslate2 engine.

Pairs (or sentences) sorted by length are cut greedily: a batch takes the next one while its
padded size, entries x (longest + 1), stays within the budget. Training sorts its pairs by
(source, target) length (data.length_sorted_batches); translation sorts its segments by source
length, with each sentence taking its beam's rows of the budget (length_batches). This module
imports no torch, so that the CTranslate2 engine batches exactly as the PyTorch one without it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def batch_ends(src_lengths: np.ndarray, tgt_lengths: np.ndarray, batch_tokens: int) -> list[int]:
    """Where each batch ends, filling batches greedily with pairs in the given (sorted) order:
    a batch takes the next pair while its padded size stays within `batch_tokens`, and a pair
    larger than that on its own gets a batch of its own.

    A loop over pairs would take seconds per million pairs, at the start of every epoch; this
    loops over batches instead. The padded size of the first k pairs from a start never falls as
    k grows, so the batch ends where it first exceeds the budget (a binary search), and that
    happens within batch_tokens / (first pair's longer side + 1) + 2 pairs: every pair after
    the first is padded to at least the first one's width.
    """
    ends, start, n = [], 0, len(src_lengths)
    while start < n:
        width = max(int(src_lengths[start]), int(tgt_lengths[start])) + 1
        stop = min(n, start + batch_tokens // width + 2)
        longest = np.maximum(np.maximum.accumulate(src_lengths[start:stop]),
                             np.maximum.accumulate(tgt_lengths[start:stop]))  # (k,)
        sizes = np.arange(1, stop - start + 1) * (longest + 1)  # padded_size of the first k pairs
        start += max(int(np.searchsorted(sizes, batch_tokens, side="right")), 1)
        ends.append(start)
    return ends


def length_batches(indices: list[int], lengths: list[int], batch_tokens: int,
                   beam: int) -> Iterator[list[int]]:
    """Group indices of similar length so that sentences x beam x (longest length + 1) <=
    batch_tokens: batch_ends, training's batcher, over the lengths sorted, with the beam's
    share of the budget (each sentence takes `beam` rows: its beams, or its samples)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")  # shortest first; equal lengths in input order
    start = 0
    for end in batch_ends(lengths[order], lengths[order], batch_tokens // beam):
        yield [indices[j] for j in order[start:end]]
        start = end
