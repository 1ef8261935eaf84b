"""Lexically constrained beam search (dynamic beam allocation), at toy size.

The properties: every phrase appears in every returned hypothesis; with no phrases the search is
search.beam_search exactly; a batch equals its sentences searched alone; a hypothesis' log_prob
is what the model gives its tokens; and the bookkeeping (ConstraintState, allocate) by hand.
"""

from __future__ import annotations

import pytest
import torch

from helpers_model import (OVERFIT_SOURCES, OVERFIT_TARGETS, VOCAB, overfit_model, random_sources,
                           random_words, source_batch)
from test_search import MODELS, models, teacher_forced_log_prob
from tinytrans.constraints import (Candidate, ConstraintState, allocate, constrained_beam_search)
from tinytrans.config import SearchConfig
from tinytrans.search import Hypothesis, beam_search
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID

LENGTHS = [5, 1, 8, 3, 6]
TOL = 1e-4


@pytest.fixture(scope="module")
def all_models():
    return models()


def contains(tokens: list[int], phrase: tuple[int, ...]) -> bool:
    n = len(phrase)
    return any(tuple(tokens[i:i + n]) == tuple(phrase) for i in range(len(tokens) - n + 1))


def count_of(tokens: list[int], phrase: tuple[int, ...]) -> int:
    n = len(phrase)
    return sum(tuple(tokens[i:i + n]) == tuple(phrase) for i in range(len(tokens) - n + 1))


def random_constraints(seed: int, sentences: int, most: int = 2,
                       longest: int = 3) -> list[list[tuple[int, ...]]]:
    """0..most phrases of 1..longest random word ids per sentence."""
    generator = torch.Generator().manual_seed(seed)
    result = []
    for _ in range(sentences):
        n = int(torch.randint(0, most + 1, (1,), generator=generator))
        result.append([tuple(random_words(generator, int(torch.randint(1, longest + 1, (1,),
                                                                       generator=generator))))
                       for _ in range(n)])
    return result


def same(a: Hypothesis, b: Hypothesis) -> bool:
    return a.tokens == b.tokens and abs(a.log_prob - b.log_prob) < TOL and abs(a.score - b.score) < TOL


# ---------------------------------------------------------------------------------------------
# ConstraintState by hand


def test_state_advances_through_a_phrase_and_counts_its_tokens():
    state = ConstraintState(((5, 6, 7), (9,)))
    assert state.count == 0 and not state.all_met
    assert state.next_tokens() == [5, 9]
    state = state.advance(5)
    assert (state.current, state.position, state.count) == (0, 1, 1)
    assert state.next_tokens() == [6]  # in the middle of a phrase only its next token advances
    state = state.advance(6).advance(7)
    assert (state.met, state.current, state.count) == (0b01, -1, 3)
    assert state.next_tokens() == [9]
    state = state.advance(9)
    assert state.all_met and state.count == 4 and state.next_tokens() == []


def test_a_phrase_left_half_way_counts_for_nothing():
    state = ConstraintState(((5, 6, 7),)).advance(5).advance(6).advance(8)
    assert (state.met, state.current, state.count) == (0, -1, 0)


def test_a_broken_phrase_can_restart_at_once():
    state = ConstraintState(((5, 6),)).advance(5).advance(5)  # 5 breaks 5 6, and begins it anew
    assert (state.current, state.position, state.count) == (0, 1, 1)
    assert state.advance(6).all_met


def test_a_broken_phrase_whose_tail_begins_it_again_goes_on_from_there():
    state = ConstraintState(((5, 5, 6),))
    for token in (5, 5, 5):  # the third 5 breaks "5 5 6", but "5 5" is still its beginning
        state = state.advance(token)
    assert (state.current, state.position, state.count) == (0, 2, 2)
    assert state.advance(6).all_met


def test_the_longest_beginning_is_followed():
    state = ConstraintState(((7, 8), (5, 7, 9))).advance(5).advance(7)
    assert (state.current, state.position) == (1, 2)  # "5 7" of the second, not "7" of the first
    assert state.advance(9).met == 0b10


def test_tokens_outside_any_phrase_change_nothing():
    state = ConstraintState(((5,),))
    assert state.advance(11) == state


def test_the_same_phrase_twice_must_appear_twice():
    state = ConstraintState(((5,), (5,))).advance(5)
    assert not state.all_met and state.count == 1
    assert state.advance(5).all_met


def test_no_phrases_is_met_from_the_start():
    state = ConstraintState(())
    assert state.all_met and state.count == 0 and state.next_tokens() == []


# ---------------------------------------------------------------------------------------------
# allocate: round-robin over the banks


def candidate(score: float, count: int, token: int = 10) -> Candidate:
    phrase = tuple(range(20, 20 + max(count, 1)))
    state = ConstraintState((phrase,))
    for t in phrase[:count]:
        state = state.advance(t)
    return Candidate(score, 0, token, state)


def test_allocation_deals_round_robin_most_advanced_bank_first():
    bank0 = [candidate(-1.0, 0), candidate(-2.0, 0), candidate(-3.0, 0)]
    bank2 = [candidate(-9.0, 2), candidate(-10.0, 2)]
    order = allocate(bank0 + bank2, 5)
    assert [c.score for c in order] == [-9.0, -1.0, -10.0, -2.0, -3.0]


def test_allocation_with_one_bank_is_by_score():
    cands = [candidate(s, 0) for s in (-3.0, -1.0, -2.0, -0.5)]
    assert [c.score for c in allocate(cands, 3)] == [-0.5, -1.0, -2.0]


# ---------------------------------------------------------------------------------------------
# The search


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam", [1, 2, 4])
def test_without_phrases_it_is_beam_search(all_models, name: str, beam: int):
    model = all_models[name]
    src = source_batch(OVERFIT_SOURCES if name == "overfit" else random_sources(31, LENGTHS))
    cfg = SearchConfig(beam=beam, nbest=beam)
    plain = beam_search(model, src, cfg)
    constrained = constrained_beam_search(model, src, cfg, [[] for _ in range(src.size(0))])
    for p, c in zip(plain, constrained, strict=True):
        assert len(p) == len(c)
        assert all(same(a, b) for a, b in zip(p, c)), (p, c)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam", [1, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_phrase_appears_in_every_hypothesis(all_models, name: str, beam: int, seed: int):
    model = all_models[name]
    sources = random_sources(100 + seed, [4, 7, 2, 9, 5, 1])
    constraints = random_constraints(seed, len(sources), most=3)
    cfg = SearchConfig(beam=beam, nbest=beam)
    results = constrained_beam_search(model, source_batch(sources), cfg, constraints)
    for hyps, phrases in zip(results, constraints, strict=True):
        assert 1 <= len(hyps) <= beam
        for hyp in hyps:
            for phrase in set(phrases):
                assert count_of(hyp.tokens, phrase) >= phrases.count(phrase), (hyp.tokens, phrases)
            assert not {BOS_ID, EOS_ID, PAD_ID} & set(hyp.tokens)


@pytest.mark.parametrize("beam", [2, 5])
def test_a_batch_equals_its_sentences_searched_alone(all_models, beam: int):
    model = all_models["eos-prone"]
    sources = random_sources(7, [6, 3, 9, 1, 5])
    constraints = random_constraints(3, len(sources))
    constraints[0] = []  # a sentence without phrases among constrained ones
    cfg = SearchConfig(beam=beam, nbest=beam)
    together = constrained_beam_search(model, source_batch(sources), cfg, constraints)
    for i, source in enumerate(sources):
        alone = constrained_beam_search(model, source_batch([source]), cfg, [constraints[i]])[0]
        assert len(alone) == len(together[i])
        assert all(same(a, b) for a, b in zip(alone, together[i])), i


def test_log_prob_is_the_models_probability_of_the_tokens(all_models):
    model = all_models["random"]
    sources = random_sources(9, [5, 3, 7])
    constraints = [[(7, 8)], [(12,), (5, 6)], []]
    src = source_batch(sources)
    results = constrained_beam_search(model, src, SearchConfig(beam=3, nbest=3), constraints)
    for row, hyps in zip(src, results):
        for hyp in hyps:
            expected = teacher_forced_log_prob(model, row[row != PAD_ID], hyp.tokens)
            assert abs(hyp.log_prob - expected) < TOL


def test_a_phrase_the_model_would_say_anyway_changes_nothing():
    model = overfit_model()
    src = source_batch(OVERFIT_SOURCES)
    cfg = SearchConfig(beam=4)
    plain = beam_search(model, src, cfg)
    phrases = [[tuple(target[1:3])] for target in OVERFIT_TARGETS]  # a piece of each reference
    constrained = constrained_beam_search(model, src, cfg, phrases)
    for p, c, target in zip(plain, constrained, OVERFIT_TARGETS):
        assert c[0].tokens == p[0].tokens == target


def test_a_phrase_longer_than_the_length_limit_still_fits():
    model = overfit_model()
    src = source_batch([OVERFIT_SOURCES[0]])
    phrase = tuple(range(4, VOCAB))  # every word id: longer than a x 1 + b allows
    cfg = SearchConfig(beam=2, max_len_a=0.0, max_len_b=1)
    [[best, *_]] = constrained_beam_search(model, src, cfg, [[phrase]])
    assert contains(best.tokens, phrase)
