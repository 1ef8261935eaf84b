"""The one search loop: forced tokens, target prefixes for every strategy, and rows following
their parents (the cache, the memory and the source mask in step with the rows)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers_model import (FIRST_WORD, OVERFIT_SOURCES, OVERFIT_TARGETS, VOCAB, overfit_model,
                           random_sources, source_batch, toy_model)
from tinytrans.config import SearchConfig
from tinytrans.constraints import constrained_beam_search
from tinytrans.model import LayerCache
from tinytrans.sampling import sample
from tinytrans.search import Greedy, beam_search, greedy_search
from tinytrans.search_loop import (NEG_INF, NewWord, follow, force_eos, force_prefix,
                                   force_token, new_word_steps, prefix_table, rows_per_source,
                                   run_search)
from tinytrans.tokenizer import EOS_ID
from tinytrans.translate import forced_log_probs

LENGTHS = [4, 7, 2, 5]
PREFIXES = [[9, 9, 12], [], [5], [17, 4]]


@pytest.fixture(scope="module")
def model():
    return toy_model(11)


@pytest.fixture(scope="module")
def src() -> torch.Tensor:
    return source_batch(random_sources(7, LENGTHS))


def test_a_forced_token_keeps_its_log_prob_and_every_other_token_goes():
    log_probs = torch.randn(3, VOCAB).log_softmax(-1)
    before = log_probs.clone()
    force_token(log_probs, torch.tensor([0, 2]), torch.tensor([7, 11]))
    assert log_probs[0, 7] == before[0, 7] and log_probs[2, 11] == before[2, 11]
    assert torch.isinf(log_probs[0]).sum() == VOCAB - 1 and torch.isinf(log_probs[2]).sum() == VOCAB - 1
    assert torch.equal(log_probs[1], before[1])  # a row not named is untouched
    force_eos(log_probs, torch.tensor([1]))
    assert log_probs[1].argmax() == EOS_ID and log_probs[1, EOS_ID] == before[1, EOS_ID]


def test_the_prefix_table_pads_with_minus_one_and_is_none_without_prefixes():
    table = prefix_table(PREFIXES, 4)
    assert table.tolist() == [[9, 9, 12], [-1, -1, -1], [5, -1, -1], [17, 4, -1]]
    assert prefix_table([[], []], 2) is None and prefix_table(None, 3) is None
    with pytest.raises(ValueError):
        prefix_table([[4]], 2)


def test_a_row_past_its_prefix_is_left_free():
    log_probs = torch.randn(3, VOCAB).log_softmax(-1)
    before = log_probs.clone()
    force_prefix(log_probs, torch.tensor([-1, 6, -1]), log_probs.device)
    assert torch.equal(log_probs[[0, 2]], before[[0, 2]])
    assert log_probs[1].argmax() == 6 and torch.isinf(log_probs[1]).sum() == VOCAB - 1


def every_strategy(model, src, prefixes, **overrides):
    """Each strategy's hypotheses per sentence, with `prefixes`."""
    n = src.size(0)
    return {
        "greedy": [[h] for h in greedy_search(model, src, SearchConfig(beam=1, **overrides), prefixes)],
        "beam": beam_search(model, src, SearchConfig(beam=4, nbest=3, **overrides), prefixes),
        "sampling": sample(model, src, SearchConfig(sample=0, nbest=3, seed=5, **overrides), prefixes),
        "constrained": constrained_beam_search(model, src, SearchConfig(beam=4, nbest=2, **overrides),
                                               [[(13,)]] * n, prefixes),
    }


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sampling", "constrained"])
def test_every_hypothesis_of_every_strategy_begins_with_its_prefix(model, src, strategy):
    found = every_strategy(model, src, PREFIXES)[strategy]
    for prefix, hyps in zip(PREFIXES, found, strict=True):
        assert hyps
        for hyp in hyps:
            assert hyp.tokens[: len(prefix)] == prefix, (prefix, hyp.tokens)
            if strategy == "constrained":
                assert 13 in hyp.tokens


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sampling", "constrained"])
def test_a_prefixed_hypothesis_scores_what_the_model_gives_it(model, src, strategy):
    """The prefix's log-probabilities count: log_prob = the model's forced log-probabilities of
    prefix + rest + EOS (the prefix is the model's own choice, forced, not a free gift)."""
    found = every_strategy(model, src, PREFIXES)[strategy]
    for row, hyps in enumerate(found):
        for hyp in hyps:
            [forced] = forced_log_probs(model, src[row: row + 1], [np.array(hyp.tokens)])
            assert math.isclose(hyp.log_prob, float(forced.sum()), abs_tol=1e-4)


def test_a_prefix_the_search_would_choose_anyway_changes_nothing():
    """(A model that ends its sentences itself: a random one runs to the limit, which a prefix
    moves.)"""
    model, src, cfg = overfit_model(), source_batch(OVERFIT_SOURCES), SearchConfig(beam=1)
    free = greedy_search(model, src, cfg)
    own = [h.tokens[:2] for h in free]  # each sentence's own first two tokens
    assert [h.tokens for h in greedy_search(model, src, cfg, own)] == [h.tokens for h in free]
    assert [h.tokens for h in free] == OVERFIT_TARGETS


def test_a_prefix_moves_the_length_limit_by_its_length(model, src):
    """A prefix uses none of the room the source gives: with a limit of 2 pieces, a prefix of 3
    still leaves room for 2 more (a random model never ends early: every row runs to the limit)."""
    cfg = SearchConfig(beam=1, max_len_a=0.0, max_len_b=2)
    prefixes = [[FIRST_WORD] * 3] * src.size(0)
    for hyp in greedy_search(model, src, cfg, prefixes):
        assert hyp.tokens[:3] == prefixes[0] and len(hyp.tokens) == 5


def test_without_prefixes_and_with_empty_ones_the_searches_agree(model, src):
    empty = [[] for _ in LENGTHS]
    for name, hyps in every_strategy(model, src, None).items():
        again = every_strategy(model, src, empty)[name]
        assert [[h.tokens for h in s] for s in hyps] == [[h.tokens for h in s] for s in again]


def filled_cache(rows: int) -> list[LayerCache]:
    generator = torch.Generator().manual_seed(0)
    cache = LayerCache(*(torch.randn(rows, 2, 3, 4, generator=generator) for _ in range(4)))
    return [cache]


def test_rows_going_on_as_they_are_move_nothing():
    cache = filled_cache(4)
    memory, mask, sentence = torch.randn(4, 5, 8), torch.ones(4, 1, 1, 5, dtype=torch.bool), torch.arange(4)
    before = cache[0].self_k
    out = follow(torch.arange(4), sentence, 1, memory, mask, cache)
    assert out[1] == 1 and out[2] is memory and out[3] is mask and cache[0].self_k is before


def test_beams_reranked_within_their_sentences_reorder_only_the_self_attention_cache():
    """Two sentences of two beams: one source each (G = 2), which re-ranking does not move."""
    cache = filled_cache(4)
    cache[0].cross_k, cache[0].cross_v = cache[0].cross_k[:2], cache[0].cross_v[:2]  # per source
    cross_before, self_before = cache[0].cross_k, cache[0].self_k.clone()
    sentence = torch.tensor([0, 0, 1, 1])
    memory = torch.randn(2, 5, 8)
    parents = torch.tensor([1, 1, 3, 2])
    moved, group, memory_out, _ = follow(parents, sentence, 2, memory,
                                         torch.ones(2, 1, 1, 5, dtype=torch.bool), cache)
    assert torch.equal(moved, sentence) and group == 2 and memory_out is memory
    assert cache[0].cross_k is cross_before  # all beams of a sentence read the same source
    assert torch.equal(cache[0].self_k, self_before[parents])


def test_the_first_beam_step_makes_k_rows_of_each_source_without_copying_it():
    """One row of BOS per sentence becomes K beams: the same sources, now in blocks of K."""
    cache = filled_cache(2)
    cross_before = cache[0].cross_k
    memory = torch.randn(2, 5, 8)
    parents = torch.tensor([0, 0, 0, 1, 1, 1])
    moved, group, memory_out, _ = follow(parents, torch.arange(2), 1, memory,
                                         torch.ones(2, 1, 1, 5, dtype=torch.bool), cache)
    assert moved.tolist() == [0, 0, 0, 1, 1, 1] and group == 3
    assert memory_out is memory and cache[0].cross_k is cross_before
    assert cache[0].self_k.size(0) == 6


def test_a_finished_sentence_leaves_with_its_rows_memory_and_cross_attention():
    cache = filled_cache(6)
    cache[0].cross_v = cache[0].cross_v[:3]  # three sources, two rows each
    cross_before, self_before = cache[0].cross_v.clone(), cache[0].self_v.clone()
    sentence = torch.tensor([0, 0, 1, 1, 2, 2])
    memory = torch.randn(3, 5, 8)
    parents = torch.tensor([1, 0, 5, 5])  # sentence 1 is done
    moved, group, memory_out, mask_out = follow(parents, sentence, 2, memory,
                                                torch.ones(3, 1, 1, 5, dtype=torch.bool), cache)
    assert moved.tolist() == [0, 0, 2, 2] and group == 2
    assert torch.equal(memory_out, memory[[0, 2]]) and mask_out.shape == (2, 1, 1, 5)
    assert torch.equal(cache[0].cross_v, cross_before[[0, 2]])
    assert torch.equal(cache[0].self_v, self_before[parents])


def test_unequal_rows_per_sentence_give_each_row_its_own_source():
    """Samples end one by one: when a sentence's rows are no longer a block of G, every row
    reads its own copy of its source (G = 1), and blocks come back when they are equal again."""
    cache = filled_cache(4)
    cache[0].cross_k = cache[0].cross_k[:2]
    cross_before = cache[0].cross_k.clone()
    memory = torch.randn(2, 5, 8)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    moved, group, memory_out, mask_out = follow(torch.tensor([0, 2, 3]), torch.tensor([0, 0, 1, 1]),
                                                2, memory, mask, cache)
    assert moved.tolist() == [0, 1, 1] and group == 1
    assert torch.equal(memory_out, memory[[0, 1, 1]]) and mask_out.size(0) == 3
    assert torch.equal(cache[0].cross_k, cross_before[[0, 1, 1]])
    moved, group, memory_out, _ = follow(torch.tensor([1, 2]), moved, 1, memory_out, mask_out, cache)
    assert moved.tolist() == [1, 1] and group == 2 and torch.equal(memory_out, memory[[1]])


@pytest.mark.parametrize("sentence, group", [([0, 0, 1, 1], 2), ([0, 1, 1, 2], 1), ([3, 3, 3], 3),
                                             ([0, 1, 2], 1), ([0, 0, 1, 1, 1, 2], 1), ([5], 1)])
def test_rows_per_source_finds_equal_blocks_only(sentence, group):
    assert rows_per_source(torch.tensor(sentence)) == group


def test_a_row_forced_to_end_and_no_candidate_left_ends_the_search(model, src):
    """Every strategy stops with all its sentences answered when the limit is one piece."""
    cfg_overrides = {"max_len_a": 0.0, "max_len_b": 1}
    for name, hyps in every_strategy(model, src, None, **cfg_overrides).items():
        for row in hyps:
            if name != "constrained":  # constraints get room for their phrase
                assert all(len(h.tokens) <= 1 for h in row), name
            assert all(h.log_prob > NEG_INF for h in row), name


def test_a_finished_last_word_makes_the_next_piece_begin_a_word(model, src):
    """NewWord: right after a prefix whose last word is finished, only word-initial pieces (here
    5 and EOS) may come; a sentence without the flag goes on as before."""
    pieces = torch.zeros(VOCAB, dtype=torch.bool)
    pieces[[5, EOS_ID]] = True
    prefixes = [[9, 9], [9, 9], [], [7]]
    cfg = SearchConfig(beam=1)
    free = greedy_search(model, src, cfg, prefixes)
    hyps = [h[0] for h in run_search(model, src, cfg, Greedy(src.size(0), cfg), prefixes,
                                     NewWord([True, False, True, True], pieces))]
    assert hyps[0].tokens[:3] == [9, 9, 5] or hyps[0].tokens == [9, 9]
    assert hyps[3].tokens[:2] == [7, 5] or hyps[3].tokens == [7]
    assert hyps[1].tokens == free[1].tokens  # not flagged
    assert hyps[2].tokens == free[2].tokens  # flagged, but no prefix: nothing to finish


def test_new_word_steps_are_the_prefix_lengths_of_flagged_sentences():
    forced = prefix_table([[4, 5], [], [6]], 3)
    pieces = torch.ones(VOCAB, dtype=torch.bool)
    assert new_word_steps(forced, NewWord([True, True, False], pieces)).tolist() == [2, -1, -1]
    assert new_word_steps(forced, NewWord([False] * 3, pieces)) is None
    assert new_word_steps(None, NewWord([True] * 3, pieces)) is None
