"""Properties of sampling: a seed reproduces its samples, the limits of the knobs (temperature 0,
top-k 1, a tiny top-p) are greedy search, each restriction keeps exactly the documented tokens,
draws follow the distribution, and hypotheses carry the model's own log-probabilities.

Toy models only (no trained one), so that the file runs in about a second.
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers_model import VOCAB, random_sources, source_batch, toy_model
from test_search import (TOL, DecodeRowCounter, assert_same, eos_prone_model, limit_of,
                         teacher_forced_log_prob, words_of)
from tinytrans.config import SearchConfig
from tinytrans.model import Transformer
from tinytrans.sampling import (draw, next_tokens, restrict_to_top_k, restrict_to_top_p, sample,
                                temper)
from tinytrans.search import Hypothesis, greedy_search
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID

NEG_INF = float("-inf")
LENGTHS = [5, 1, 8, 3, 6]  # source words per sentence: a batch that needs padding


def sampling(**options) -> SearchConfig:
    """A sampling config: from all tokens at temperature 1 unless `options` say otherwise."""
    return SearchConfig(**{"sample": 0, **options})


@pytest.fixture(scope="module")
def all_models() -> dict[str, Transformer]:
    # random: nearly flat distributions, it rarely says EOS and runs into the length limit;
    # eos-prone: hypotheses of varied lengths, so rows leave the batch at different steps
    return {"random": toy_model(3), "eos-prone": eos_prone_model(),
            "eos-prone-2": eos_prone_model(seed=1, boost=1.0)}


MODELS = ["random", "eos-prone", "eos-prone-2"]


@pytest.fixture(scope="module")
def src() -> torch.Tensor:
    return source_batch(random_sources(31, LENGTHS))


# ---------------------------------------------------------------------------------------------
# Each step of the sampling distribution, on hand-made log-probabilities


def log_of(*rows: list[float]) -> torch.Tensor:
    """Probabilities per row -> (R, V) log-probabilities (a probability of 0 gives -inf)."""
    return torch.tensor(rows).log()


def kept(restricted: torch.Tensor, original: torch.Tensor) -> list[set[int]]:
    """The ids each row keeps, checking that kept tokens keep their values and the rest are -inf."""
    keep = restricted > NEG_INF
    assert torch.equal(restricted[keep], original[keep])
    return [set(row.nonzero().flatten().tolist()) for row in keep]


DISTRIBUTION = [0.5, 0.3, 0.15, 0.05]
SHUFFLED = [0.05, 0.15, 0.5, 0.3]  # the same, in another order: ranks are not ids


@pytest.mark.parametrize("probs, k, expected", [
    (DISTRIBUTION, 1, {0}),
    (DISTRIBUTION, 2, {0, 1}),
    (SHUFFLED, 2, {2, 3}),
    (SHUFFLED, 3, {1, 2, 3}),
    (SHUFFLED, 4, {0, 1, 2, 3}),
    (SHUFFLED, 10, {0, 1, 2, 3}),  # more than the vocabulary: all
    ([0.1, 0.3, 0.3, 0.3], 2, {1, 2}),  # ties go to the lower ids, as argmax's do
    ([0.1, 0.3, 0.3, 0.3], 1, {1}),  # so top-1 is argmax
    ([0.0, 0.0, 0.6, 0.4], 1, {2}),  # -inf (PAD, BOS) are the least probable
])
def test_restrict_to_top_k_keeps_the_k_most_probable(probs: list[float], k: int,
                                                     expected: set[int]):
    log_probs = log_of(probs, DISTRIBUTION)  # a second row: rows are restricted independently
    assert kept(restrict_to_top_k(log_probs, k), log_probs) == [expected, set(range(min(k, 4)))]


@pytest.mark.parametrize("probs, top_p, expected", [
    (DISTRIBUTION, 0.4, {0}),  # 0.5 alone reaches 0.4
    (DISTRIBUTION, 0.7, {0, 1}),  # 0.5 falls short, 0.5 + 0.3 reaches it
    (DISTRIBUTION, 0.85, {0, 1, 2}),
    (DISTRIBUTION, 0.99, {0, 1, 2, 3}),
    (DISTRIBUTION, 1.0, {0, 1, 2, 3}),
    (SHUFFLED, 0.7, {2, 3}),
    (DISTRIBUTION, 1e-6, {0}),  # the most probable token always stays
    ([0.9, 0.1, 0.0, 0.0], 1e-6, {0}),
    ([0.1, 0.3, 0.3, 0.3], 0.5, {1, 2}),  # a tie at the edge goes to the lower id
    ([1 - 3e-9, 1e-9, 1e-9, 1e-9], 1.0, {0, 1, 2, 3}),  # 1 keeps all, however small
    ([0.0, 0.0, 0.6, 0.4], 1.0, {2, 3}),  # -inf stays -inf
    ([0.0, 0.0, 0.6, 0.4], 0.5, {2}),
])
def test_restrict_to_top_p_keeps_the_smallest_set_reaching_top_p(probs: list[float], top_p: float,
                                                                 expected: set[int]):
    # a flat second row keeps ceil(4 top_p) tokens, the lowest ids (ties)
    log_probs = log_of(probs, [0.25] * 4)
    flat = set(range(math.ceil(4 * top_p)))
    assert kept(restrict_to_top_p(log_probs, top_p), log_probs) == [expected, flat]


def test_ties_go_to_the_lowest_ids_in_a_wide_vocabulary():
    """1,000 equal tokens: an unstable sort would pick arbitrary ones (it does, on a CPU)."""
    flat = torch.zeros(1, 1000)
    assert int(flat.argmax()) == 0  # the greedy choice
    assert kept(restrict_to_top_k(flat, 3), flat) == [{0, 1, 2}]
    assert kept(restrict_to_top_p(flat, 0.0025), flat) == [{0, 1, 2}]


def test_restrictions_keep_unnormalised_log_probs():
    """Top-p measures the mass after tempering and top-k, so it renormalises what it is given."""
    tempered = temper(log_of(DISTRIBUTION), 1.0)  # shifted: the best token is at 0
    assert float(tempered.max()) == 0.0
    assert kept(restrict_to_top_p(tempered, 0.7), tempered) == [{0, 1}]


def test_temperature_one_changes_no_probability_and_a_tiny_one_is_argmax():
    log_probs = log_of(DISTRIBUTION, [0.0, 0.0, 0.0, 1e-30])  # a row with one finite token
    assert torch.allclose(temper(log_probs, 1.0).softmax(-1), log_probs.softmax(-1))
    for temperature in (1e-3, 1e-30, 1e-300):  # 1e-300 is 0 in float32: must not divide by 0
        probs = temper(log_probs, temperature).softmax(-1)
        assert torch.equal(probs, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]])), temperature


def test_draw_is_reproducible_with_a_seed():
    log_probs = log_of(*[DISTRIBUTION] * 50)  # (50, 4)
    first = draw(log_probs, torch.Generator().manual_seed(7))
    assert first.shape == (50,)
    assert torch.equal(first, draw(log_probs, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, draw(log_probs, torch.Generator().manual_seed(8)))


# Expected frequencies of DRAWN (token 0 is PAD-like, -inf) under each setting, worked by hand.
DRAWN = [0.0, 0.5, 0.3, 0.15, 0.05]
SQUARED = [p * p for p in DRAWN[:4]] + [0.0]  # temperature 1/2 squares, top-3 drops the last


@pytest.mark.parametrize("options, expected", [
    ({}, DRAWN),
    ({"sample": 2}, [0, 0.5 / 0.8, 0.3 / 0.8, 0, 0]),
    ({"top_p": 0.7}, [0, 0.5 / 0.8, 0.3 / 0.8, 0, 0]),
    ({"top_p": 0.85}, [0, 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]),
    # top-p after top-k: of the renormalised top 3 (0.53, 0.32, 0.16) the first two reach 0.83;
    # on the original mass (0.5 + 0.3 = 0.8) they would not
    ({"sample": 3, "top_p": 0.83}, [0, 0.5 / 0.8, 0.3 / 0.8, 0, 0]),
    ({"temperature": 2.0}, [p ** 0.5 / sum(q ** 0.5 for q in DRAWN) for p in DRAWN]),
    ({"temperature": 0.5, "sample": 3}, [p / sum(SQUARED) for p in SQUARED]),
    ({"temperature": 0.0}, [0, 1.0, 0, 0, 0]),
])
def test_draws_follow_the_sampling_distribution(options: dict, expected: list[float]):
    """20,000 draws: a frequency's standard deviation is at most sqrt(0.25 / 20000) = 0.0035, so
    0.02 is over 5 deviations (and the seed is fixed): this never flakes. Tokens outside the
    distribution must never be drawn at all."""
    n = 20_000
    log_probs = log_of(*[DRAWN] * n)  # (n, 5)
    tokens = next_tokens(log_probs, sampling(**options), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=len(DRAWN)).double() / n
    assert frequencies.tolist() == pytest.approx(expected, abs=0.02)
    assert all(f == 0 for f, p in zip(frequencies.tolist(), expected) if p == 0)


# ---------------------------------------------------------------------------------------------
# Reproducibility


def tokens_of(results: list[list[Hypothesis]]) -> list[list[list[int]]]:
    return [[h.tokens for h in hyps] for hyps in results]


def test_a_seed_reproduces_its_samples_and_another_seed_does_not(all_models, src):
    """At temperature 1 from all tokens, the chance that another seed draws these very samples
    is the model's probability of them: exp(their summed log-probability), checked below to be
    under 1e-100 (about 300 tokens from the random model's nearly flat distributions)."""
    model, cfg = all_models["random"], sampling(nbest=4, seed=11)
    before = torch.get_rng_state()
    first = sample(model, src, cfg)
    assert sum(h.log_prob for hyps in first for h in hyps) < -100 * math.log(10)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is left alone
    torch.manual_seed(1234)  # and the samples do not depend on it
    again = sample(model, src, cfg)
    other = sample(model, src, sampling(nbest=4, seed=12))
    assert tokens_of(again) == tokens_of(first)
    assert [[h.log_prob for h in hyps] for hyps in again] == \
        [[h.log_prob for h in hyps] for hyps in first]
    assert tokens_of(other) != tokens_of(first)
    for hyps in first:  # the rows of a sentence are independent draws
        assert len({tuple(h.tokens) for h in hyps}) > 1


# ---------------------------------------------------------------------------------------------
# The limits of the knobs are greedy search


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("options", [
    {"temperature": 0.0},
    {"temperature": 0.0, "sample": 3, "top_p": 0.5},  # the restrictions keep the argmax anyway
    {"sample": 1},
    {"top_p": 1e-6},
    {"sample": 1, "temperature": 5.0},  # however flat, one token is left
])
def test_greedy_limits_equal_greedy_search(all_models, src, name: str, options: dict):
    model = all_models[name]
    cfg = sampling(nbest=3, lenpen=1.0, **options)
    greedy = greedy_search(model, src, SearchConfig(beam=1, lenpen=1.0))
    for row, (hyps, expected) in enumerate(zip(sample(model, src, cfg), greedy, strict=True)):
        assert len(hyps) == 3
        for hyp in hyps:
            assert_same(hyp, expected, f"sentence {row}")


# ---------------------------------------------------------------------------------------------
# n-best lists, scores and log-probabilities


@pytest.mark.parametrize("nbest, lenpen", [(1, 1.0), (5, 0.0), (6, 1.0), (6, 2.0)])
def test_nbest_samples_per_sentence_sorted_by_score(all_models, src, nbest: int, lenpen: float):
    results = sample(all_models["eos-prone"], src, sampling(nbest=nbest, lenpen=lenpen))
    assert len(results) == src.size(0)
    for row, hyps in enumerate(results):
        assert len(hyps) == nbest
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True), f"sentence {row}"
        for hyp in hyps:
            assert hyp.score == pytest.approx(hyp.log_prob / (len(hyp.tokens) + 1) ** lenpen)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("options", [
    {},
    {"temperature": 1.5, "sample": 6, "top_p": 0.9},  # tempered and cut: still the model's
    {"temperature": 0.7, "max_len_a": 0.0, "max_len_b": 2},  # EOS forced at a short limit
])
def test_log_prob_equals_teacher_forced_rescoring(all_models, src, name: str, options: dict):
    model = all_models[name]
    for row, hyps in enumerate(sample(model, src, sampling(nbest=3, seed=5, **options))):
        alone = src[row, : words_of(src[row]) + 1]
        for hyp in hyps:
            rescored = teacher_forced_log_prob(model, alone, hyp.tokens)
            assert hyp.log_prob == pytest.approx(rescored, abs=TOL), (row, hyp.tokens)


# ---------------------------------------------------------------------------------------------
# Length limit, tokens, and rows leaving the batch


@pytest.mark.parametrize("a, b", [(0.0, 1), (0.5, 2), (1.0, 3)])
def test_max_length_is_respected_and_tokens_are_words(all_models, src, a: float, b: int):
    cfg = sampling(nbest=3, max_len_a=a, max_len_b=b)
    hit = 0
    for row, hyps in enumerate(sample(all_models["random"], src, cfg)):
        limit = limit_of(words_of(src[row]), cfg)
        for hyp in hyps:
            assert len(hyp.tokens) <= limit
            # PAD and BOS are never generated, EOS ends a hypothesis and is not one of its tokens
            assert all(isinstance(t, int) and 0 <= t < VOCAB for t in hyp.tokens), hyp.tokens
            assert not {PAD_ID, BOS_ID, EOS_ID} & set(hyp.tokens), hyp.tokens
            hit += len(hyp.tokens) == limit
    assert hit > 0, "no sample reached its limit: the test checks nothing"


def test_finished_rows_leave_the_batch_and_the_cache_changes_nothing(all_models, src):
    """Cached and cache-free decoding agree to ~1e-6 in log-probability, far too little to move
    one draw of this seed, so the same seed gives the same samples: the cache follows its rows
    as finished ones leave."""
    model, cfg = all_models["eos-prone"], sampling(nbest=4, seed=3)
    counter = DecodeRowCounter(model)
    cache_free = sample(counter, src, cfg)
    for hyps, expected in zip(sample(model, src, cfg), cache_free, strict=True):
        for hyp, ref in zip(hyps, expected, strict=True):
            assert_same(hyp, ref)
    rows = counter.rows
    assert rows[0] == src.size(0) * cfg.nbest
    assert rows == sorted(rows, reverse=True) and rows[-1] < rows[0]  # rows left, none came back
    longest = max(len(h.tokens) for hyps in cache_free for h in hyps)
    assert len(rows) == longest + 1  # decoding stopped with the longest sample's EOS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sampling_on_gpu_is_reproducible_and_its_greedy_limit_matches_cpu(all_models, src):
    model = eos_prone_model().cuda()
    cfg = sampling(nbest=3, seed=2)  # the generator lives on the GPU, where the draws are made
    first = sample(model, src.cuda(), cfg)
    assert tokens_of(sample(model, src.cuda(), cfg)) == tokens_of(first)
    greedy_cfg = sampling(nbest=2, temperature=0.0)
    on_cpu = sample(all_models["eos-prone"], src, greedy_cfg)
    assert tokens_of(sample(model, src.cuda(), greedy_cfg)) == tokens_of(on_cpu)
