"""Parallel data as ids: filtering, compact storage and token-based batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import head
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytrans import data
from tinytrans.data import (
    EncodedCorpus,
    FilterConfig,
    RaggedIds,
    ResampledCorpus,
    encode_parallel,
    id_dtype,
    length_sorted_batches,
    make_batch,
    padded_size,
    padding_ratio,
)
from tinytrans.errors import UserError
from tinytrans.lengths import batch_ends
from tinytrans.textio import read_parallel
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_tokenizer


class WordTokenizer:
    """A stand-in tokenizer with one id per whitespace word, so piece counts are exact."""

    def __init__(self, vocab_size: int = 100):
        self.vocab_size = vocab_size

    def encode(self, lines: list[str], sampling_alpha: float = 0.0) -> list[list[int]]:
        return [[4 + len(word) for word in line.split()] for line in lines]


def words(n: int) -> str:
    return " ".join(["w"] * n)


def ragged(sentences: list[list[int]]) -> RaggedIds:
    lengths = [len(s) for s in sentences]
    ids = np.array([i for s in sentences for i in s], dtype=np.uint16)
    return RaggedIds(ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Encoding and filtering

def test_encode_without_filters_keeps_every_pair(small_tokenizer: Tokenizer) -> None:
    pairs = [("A man runs.", "Ein Mann läuft."), ("", "leer"), ("nur Quelle", ""), ("", "")]
    corpus = encode_parallel(iter(pairs), small_tokenizer, small_tokenizer)
    assert len(corpus) == len(corpus.tgt) == 4
    assert (corpus.stats.read, corpus.stats.kept, corpus.stats.dropped) == (4, 4, 0)
    assert corpus.src.lengths.tolist()[1] == 0 and corpus.tgt.lengths.tolist()[2] == 0


def test_encode_keeps_counts_and_order_across_chunks(small_tokenizer: Tokenizer, bundled: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "ENCODE_CHUNK", 7)
    pairs = list(zip(head(bundled / "test.en", 100), head(bundled / "test.de", 100)))
    corpus = encode_parallel(iter(pairs), small_tokenizer, small_tokenizer)
    assert len(corpus) == 100
    assert (corpus.stats.read, corpus.stats.kept) == (100, 100)
    for i in (0, 6, 7, 50, 99):
        assert corpus.src[i].tolist() == small_tokenizer.encode([pairs[i][0]])[0]
        assert corpus.tgt[i].tolist() == small_tokenizer.encode([pairs[i][1]])[0]


def test_resampled_corpus_changes_with_the_epoch_and_repeats_for_the_same_one(
        small_tokenizer: Tokenizer, bundled: Path) -> None:
    pairs = list(read_parallel(bundled / "valid", "en", "de"))[:300]

    def epoch(number: int, seed: int = 1) -> list[list[int]]:
        keep_all = FilterConfig(max_length=1000, max_ratio=100.0)
        corpus = ResampledCorpus(pairs, small_tokenizer, small_tokenizer, keep_all, 0.1, seed)(number)
        return [corpus.tgt[i].tolist() for i in range(len(corpus))]

    best = encode_parallel(iter(pairs), small_tokenizer, small_tokenizer, FilterConfig())
    assert epoch(3) == epoch(3)  # a new process (a resumed run) gets the same epoch
    assert epoch(3) != epoch(4) and epoch(3) != epoch(3, seed=2)
    assert epoch(3) != [best.tgt[i].tolist() for i in range(len(best))]
    assert small_tokenizer.decode(epoch(3)) == [t for _, t in pairs]


def test_filters_count_empty_too_long_and_bad_ratio_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "ENCODE_CHUNK", 4)  # the counts must add up over chunks too
    pairs = [
        ("", words(2)),            # empty
        (words(2), ""),            # empty
        ("", ""),                  # empty
        (words(11), words(5)),     # too long (source)
        (words(5), words(11)),     # too long (target)
        (words(2), words(7)),      # bad ratio: 7 > 3 * 2
        (words(10), words(3)),     # bad ratio: 10 > 3 * 3
        (words(1), words(5)),      # kept: extreme ratio but at most 5 pieces
        (words(2), words(6)),      # kept: 6 is not more than 3 * 2
        (words(10), words(10)),    # kept: max_length is inclusive
        (words(3), words(4)),      # kept
    ]
    tok = WordTokenizer()
    corpus = encode_parallel(iter(pairs), tok, tok, FilterConfig(max_length=10, max_ratio=3.0))
    s = corpus.stats
    assert (s.read, s.kept, s.empty, s.too_long, s.bad_ratio, s.dropped) == (11, 4, 3, 2, 2, 7)
    assert corpus.src.lengths.tolist() == [1, 2, 10, 3]
    assert corpus.tgt.lengths.tolist() == [5, 6, 10, 4]


def test_arrays_use_uint16_for_small_vocabularies(small_tokenizer: Tokenizer) -> None:
    corpus = encode_parallel(iter([("A dog.", "Ein Hund.")]), small_tokenizer, small_tokenizer)
    assert corpus.src.ids.dtype == np.uint16 and corpus.tgt.ids.dtype == np.uint16


def test_id_dtype_widens_only_past_uint16() -> None:
    assert id_dtype(500) == np.uint16
    assert id_dtype(65536) == np.uint16  # ids 0..65535
    assert id_dtype(65537) == np.int32
    big = WordTokenizer(vocab_size=100_000)
    corpus = encode_parallel(iter([("a b", "c")]), big, big)
    assert corpus.src.ids.dtype == np.int32


def test_ragged_indexing_returns_the_encoded_ids(small_tokenizer: Tokenizer, bundled: Path) -> None:
    src = head(bundled / "valid.en", 200)
    tgt = head(bundled / "valid.de", 200)
    corpus = encode_parallel(zip(src, tgt), small_tokenizer, small_tokenizer)
    expected_src, expected_tgt = small_tokenizer.encode(src), small_tokenizer.encode(tgt)
    assert [corpus.src[i].tolist() for i in range(len(corpus))] == expected_src
    assert [corpus.tgt[i].tolist() for i in range(len(corpus))] == expected_tgt
    assert corpus.src.lengths.tolist() == [len(x) for x in expected_src]
    assert corpus.src.nbytes == corpus.src.ids.nbytes + corpus.src.offsets.nbytes


def test_ragged_ids_handle_empty_sentences() -> None:
    r = ragged([[5], [], [6, 7]])
    assert len(r) == 3
    assert [r[i].tolist() for i in range(3)] == [[5], [], [6, 7]]
    assert r.lengths.tolist() == [1, 0, 2]


# ---------------------------------------------------------------------------------------------
# Length-sorted batches

lengths_strategy = st.lists(st.tuples(st.integers(1, 60), st.integers(1, 60)), max_size=300)


def _lengths(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    src = np.array([s for s, _ in pairs], dtype=np.int64)
    tgt = np.array([t for _, t in pairs], dtype=np.int64)
    return src, tgt


@settings(max_examples=150, deadline=None)
@given(pairs=lengths_strategy, batch_tokens=st.integers(1, 3000),
       seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 1000))
def test_every_index_appears_once_in_batches_within_the_budget(pairs, batch_tokens, seed,
                                                               epoch) -> None:
    src, tgt = _lengths(pairs)
    batches = length_sorted_batches(src, tgt, batch_tokens, seed, epoch)
    assert all(len(b) > 0 for b in batches)
    flat = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(pairs)))
    for b in batches:
        if len(b) > 1:
            assert padded_size(len(b), int(src[b].max()), int(tgt[b].max())) <= batch_tokens


@settings(max_examples=50, deadline=None)
@given(pairs=lengths_strategy, batch_tokens=st.integers(1, 3000),
       seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 1000))
def test_same_seed_and_epoch_give_the_same_batches(pairs, batch_tokens, seed, epoch) -> None:
    src, tgt = _lengths(pairs)
    first = length_sorted_batches(src, tgt, batch_tokens, seed, epoch)
    again = length_sorted_batches(src.copy(), tgt.copy(), batch_tokens, seed, epoch)
    assert [b.tolist() for b in first] == [b.tolist() for b in again]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(50, 300), batch_tokens=st.integers(1, 3000),
       seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 1000), data_=st.data())
def test_another_epoch_gives_another_order(n, batch_tokens, seed, epoch, data_) -> None:
    # Lengths from 4 (source, target) values: some value is shared by at least n/4 >= 13 pairs,
    # whose tie order alone makes equal orders a 1 in 13! event.
    src_values = data_.draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    src = np.array(src_values, dtype=np.int64)
    tgt = src * 2
    this = np.concatenate(length_sorted_batches(src, tgt, batch_tokens, seed, epoch))
    other = np.concatenate(length_sorted_batches(src, tgt, batch_tokens, seed, epoch + 1))
    assert this.tolist() != other.tolist()


def test_sorted_batches_pad_far_less_than_random_ones() -> None:
    rng = np.random.default_rng(0)
    src_lengths = rng.integers(1, 50, size=2000)
    tgt_lengths = src_lengths + rng.integers(0, 3, size=2000)
    corpus = EncodedCorpus(src=_dummy_ragged(src_lengths), tgt=_dummy_ragged(tgt_lengths))
    batches = length_sorted_batches(src_lengths, tgt_lengths, 1000, seed=1, epoch=0)
    assert len(batches) > 10
    shuffled = np.split(rng.permutation(2000), np.cumsum([len(b) for b in batches])[:-1])
    assert padding_ratio(corpus, batches) < 0.05
    assert padding_ratio(corpus, shuffled) > 0.3


def _dummy_ragged(lengths: np.ndarray) -> RaggedIds:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return RaggedIds(np.full(int(offsets[-1]), 7, dtype=np.uint16), offsets)


def test_a_pair_larger_than_the_budget_gets_a_batch_of_its_own() -> None:
    src = np.array([3, 100, 4], dtype=np.int64)
    tgt = np.array([3, 100, 4], dtype=np.int64)
    batches = length_sorted_batches(src, tgt, 50, seed=0, epoch=0)
    assert [1] in [b.tolist() for b in batches]
    assert sorted(np.concatenate(batches).tolist()) == [0, 1, 2]


def _greedy_ends(src: np.ndarray, tgt: np.ndarray, batch_tokens: int) -> list[int]:
    """What batch_ends computes, by its definition: one pair at a time."""
    ends, start, longest = [], 0, 0
    for position in range(len(src)):
        grown = max(longest, int(src[position]), int(tgt[position]))
        if position > start and padded_size(position + 1 - start, grown, grown) > batch_tokens:
            ends.append(position)
            start, grown = position, max(int(src[position]), int(tgt[position]))
        longest = grown
    return ends + [len(src)] if len(src) else []


@settings(max_examples=150, deadline=None)
@given(pairs=lengths_strategy, batch_tokens=st.integers(1, 3000))
def test_batch_ends_fill_batches_greedily_pair_by_pair(pairs, batch_tokens) -> None:
    src, tgt = _lengths(pairs)
    assert batch_ends(src, tgt, batch_tokens) == _greedy_ends(src, tgt, batch_tokens)


def test_nonpositive_batch_tokens_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--batch-tokens"):
        length_sorted_batches(np.array([1]), np.array([1]), 0, seed=0, epoch=0)


# ---------------------------------------------------------------------------------------------
# Batch tensors

@pytest.fixture
def toy_corpus() -> EncodedCorpus:
    return EncodedCorpus(src=ragged([[5, 6, 7], [8]]), tgt=ragged([[9], [10, 11, 12, 13]]))


def test_make_batch_adds_eos_bos_and_pads_with_zero(toy_corpus: EncodedCorpus) -> None:
    batch = make_batch(toy_corpus, np.array([0, 1]))
    assert PAD_ID == 0
    assert batch.src.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, 0, 0, 0], [BOS_ID, 10, 11, 12, 13]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, 0, 0, 0], [10, 11, 12, 13, EOS_ID]]
    assert batch.src.dtype == batch.tgt_in.dtype == batch.tgt_out.dtype == torch.int64
    assert batch.n_tgt_tokens == 2 + 5


def test_make_batch_follows_the_given_index_order(toy_corpus: EncodedCorpus) -> None:
    batch = make_batch(toy_corpus, np.array([1, 0]))
    assert batch.src.tolist() == [[8, EOS_ID, 0, 0], [5, 6, 7, EOS_ID]]
    assert batch.tgt_out[1].tolist() == [9, EOS_ID, 0, 0, 0]
    assert batch.indices.tolist() == [1, 0]


def test_make_batch_on_real_ids(small_tokenizer: Tokenizer, bundled: Path) -> None:
    src, tgt = head(bundled / "test.en", 30), head(bundled / "test.de", 30)
    corpus = encode_parallel(zip(src, tgt), small_tokenizer, small_tokenizer)
    indices = np.array([3, 17, 4])
    batch = make_batch(corpus, indices)
    for row, i in enumerate(indices):
        ids = small_tokenizer.encode([tgt[i]])[0]
        out = batch.tgt_out[row].tolist()
        assert out[: len(ids) + 1] == ids + [EOS_ID]
        assert set(out[len(ids) + 1:]) <= {PAD_ID}
        assert batch.tgt_in[row].tolist()[: len(ids) + 1] == [BOS_ID] + ids
        real = batch.src[row][batch.src[row] > EOS_ID].tolist()
        assert small_tokenizer.decode([real])[0] == src[i]


def test_padding_ratio_counts_padding_of_both_sides(toy_corpus: EncodedCorpus) -> None:
    # src with EOS: 4 and 2 tokens; tgt with BOS/EOS: 2 and 5 -> 13 real tokens in 2 * (4 + 5).
    assert padding_ratio(toy_corpus, [np.array([0, 1])]) == pytest.approx(1 - 13 / 18)
    assert padding_ratio(toy_corpus, [np.array([0]), np.array([1])]) == 0.0


# ---------------------------------------------------------------------------------------------
# Multi30k

@pytest.fixture(scope="module")
def multi30k_train(multi30k: Path, tmp_path_factory: pytest.TempPathFactory) -> EncodedCorpus:
    prefix = tmp_path_factory.mktemp("multi30k") / "joint"
    tok = train_tokenizer([multi30k / "train.en.gz", multi30k / "train.de.gz"], prefix, 8000)
    return encode_parallel(read_parallel(multi30k / "train", "en", "de"), tok, tok, FilterConfig())


def test_multi30k_batches_have_little_padding(multi30k_train: EncodedCorpus) -> None:
    corpus = multi30k_train
    assert len(corpus) > 28_000
    batches = length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, 4096, seed=1, epoch=0)
    assert padding_ratio(corpus, batches) < 0.10


def test_multi30k_ids_fit_in_two_megabytes(multi30k_train: EncodedCorpus) -> None:
    assert multi30k_train.src.ids.nbytes + multi30k_train.tgt.ids.nbytes < 2_000_000
