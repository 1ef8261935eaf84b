"""Properties of greedy and beam search, checked against a cache-free reference written here.

The reference decoders below re-run `model.decode` on the whole prefix at every step (no key/value
cache, no batching, one sentence at a time) and follow the documented beam algorithm: of the 2K
best candidates, those among the first K that end in EOS finish; the K best others go on; a
sentence stops when K hypotheses have finished or at its length limit.
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers_model import (OVERFIT_SOURCES, OVERFIT_TARGETS, VOCAB, overfit_model, random_sources,
                           source_batch, toy_model)
from tinytrans.config import (MAX_BATCH_TOKENS, MAX_LEN_A, MAX_LEN_B, MAX_LENPEN, MAX_SAMPLES,
                              MAX_SEARCH_BEAM, MAX_SEED, MAX_TEMPERATURE, MAX_TOP_K, SearchConfig)
from tinytrans.model import LayerCache, Transformer, padding_mask
from tinytrans.sampling import sample
from tinytrans.search import (Hypothesis, beam_search, greedy_search, length_penalty,
                              max_lengths, search)
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID

TOL = 1e-4
LENGTHS = [5, 1, 8, 3, 6]  # source words per sentence: a batch that needs padding


def eos_prone_model(seed: int = 5, boost: float = 1.25) -> Transformer:
    """A random toy model whose EOS is likely enough that hypothesis lengths vary.

    A random model almost never ranks EOS first, so every hypothesis would run to the length
    limit. Adding a multiple of the EOS embedding to the final LayerNorm's bias raises the EOS
    logit (tied output layer: logit = state . embedding) without touching the rest of the maths.
    """
    model = toy_model(seed)
    with torch.no_grad():
        model.decoder_norm.bias += boost * model.embedding.weight[EOS_ID]
    return model


def models() -> dict[str, Transformer]:
    return {"random": toy_model(3), "eos-prone": eos_prone_model(), "overfit": overfit_model()}


MODELS = ["random", "eos-prone", "overfit"]


@pytest.fixture(scope="module")
def all_models() -> dict[str, Transformer]:
    return models()


def sources_for(name: str) -> torch.Tensor:
    if name == "overfit":
        return source_batch(OVERFIT_SOURCES)
    return source_batch(random_sources(31, LENGTHS))


def words_of(src_row: torch.Tensor) -> int:
    return int((src_row != PAD_ID).sum()) - 1


def limit_of(n_words: int, cfg: SearchConfig) -> int:
    return max(1, math.floor(cfg.max_len_a * n_words + cfg.max_len_b))


# ---------------------------------------------------------------------------------------------
# The reference: full re-decoding of every prefix, one sentence at a time


def reference_next_log_probs(model: Transformer, src_row: torch.Tensor,
                             prefixes: list[list[int]]) -> torch.Tensor:
    """(R, V) log-probabilities of the token after BOS + prefix, for R prefixes of one length."""
    src = src_row[None].expand(len(prefixes), -1)
    src_mask = padding_mask(src)
    memory = model.encode(src, src_mask)
    tgt = torch.tensor([[BOS_ID] + p for p in prefixes], dtype=torch.long)
    states = model.decode(tgt, memory, src_mask)[:, -1]  # (R, D), no cache
    log_probs = model.logits(states).float().log_softmax(dim=-1)
    log_probs[:, PAD_ID] = float("-inf")
    log_probs[:, BOS_ID] = float("-inf")
    return log_probs


def only_eos(log_probs: torch.Tensor) -> torch.Tensor:
    forced = torch.full_like(log_probs, float("-inf"))
    forced[:, EOS_ID] = log_probs[:, EOS_ID]
    return forced


@torch.no_grad()
def reference_greedy(model: Transformer, src_row: torch.Tensor, cfg: SearchConfig) -> Hypothesis:
    limit = limit_of(words_of(src_row), cfg)
    tokens: list[int] = []
    log_prob = 0.0
    for step in range(limit + 1):
        log_probs = reference_next_log_probs(model, src_row, [tokens])
        if step >= limit:
            log_probs = only_eos(log_probs)
        best = int(log_probs[0].argmax())
        log_prob += float(log_probs[0, best])
        if best == EOS_ID:
            break
        tokens.append(best)
    return Hypothesis(tokens, log_prob, length_penalty(log_prob, len(tokens) + 1, cfg.lenpen))


@torch.no_grad()
def reference_beam(model: Transformer, src_row: torch.Tensor,
                   cfg: SearchConfig) -> list[Hypothesis]:
    K = cfg.beam
    limit = limit_of(words_of(src_row), cfg)
    beams: list[tuple[list[int], float]] = [([], 0.0)]  # (tokens, summed log-prob)
    finished: list[Hypothesis] = []
    for step in range(limit + 1):
        log_probs = reference_next_log_probs(model, src_row, [tokens for tokens, _ in beams])
        if step >= limit:
            log_probs = only_eos(log_probs)
        candidates = [(score + float(log_probs[i, token]), i, token)
                      for i, (_, score) in enumerate(beams) for token in range(log_probs.size(1))]
        candidates.sort(key=lambda c: -c[0])
        best = candidates[: 2 * K]
        for score, i, token in best[:K]:
            if token == EOS_ID and score > float("-inf") and len(finished) < K:
                ids = beams[i][0]
                penalised = length_penalty(score, len(ids) + 1, cfg.lenpen)
                finished.append(Hypothesis(ids, score, penalised))
        if len(finished) >= K or step >= limit:
            break
        beams = [(beams[i][0] + [token], score) for score, i, token in best if token != EOS_ID][:K]
    return sorted(finished, key=lambda h: -h.score)[: cfg.nbest]


def teacher_forced_log_prob(model: Transformer, src_row: torch.Tensor, tokens: list[int]) -> float:
    """log P(tokens + EOS | source) under the model, from one teacher-forced forward pass."""
    with torch.no_grad():
        logits = model(src_row[None], torch.tensor([[BOS_ID] + tokens]))[0]  # (T, V)
        log_probs = logits.float().log_softmax(-1)
    return float(sum(log_probs[t, token] for t, token in enumerate(tokens + [EOS_ID])))


def assert_same(hyp: Hypothesis, expected: Hypothesis, context: str = "") -> None:
    assert hyp.tokens == expected.tokens, context
    assert hyp.log_prob == pytest.approx(expected.log_prob, abs=TOL), context
    assert hyp.score == pytest.approx(expected.score, abs=TOL), context


# ---------------------------------------------------------------------------------------------
# Greedy is the reference the beam is tested against


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("lenpen", [0.0, 1.0])
def test_beam_of_one_equals_greedy(all_models, name: str, lenpen: float):
    model, src = all_models[name], sources_for(name)
    cfg = SearchConfig(beam=1, nbest=1, lenpen=lenpen)
    greedy = greedy_search(model, src, cfg)
    beam = beam_search(model, src, cfg)
    assert len(greedy) == len(beam) == src.size(0)
    for row, (g, b) in enumerate(zip(greedy, beam, strict=True)):
        assert len(b) == 1
        assert_same(b[0], g, f"sentence {row}")


def test_search_uses_greedy_for_a_beam_of_one(all_models):
    model, src = all_models["eos-prone"], sources_for("eos-prone")
    cfg = SearchConfig(beam=1)
    results = search(model, src, cfg)
    for row, (hyps, g) in enumerate(zip(results, greedy_search(model, src, cfg), strict=True)):
        assert len(hyps) == 1
        assert_same(hyps[0], g, f"sentence {row}")
    beam_cfg = SearchConfig(beam=3, nbest=2)
    expected_results = beam_search(model, src, beam_cfg)
    for hyps, expected in zip(search(model, src, beam_cfg), expected_results, strict=True):
        assert [h.tokens for h in hyps] == [h.tokens for h in expected]


def test_overfit_model_beam_finds_the_targets(all_models):
    model, src = all_models["overfit"], sources_for("overfit")
    results = beam_search(model, src, SearchConfig(beam=4, nbest=4))
    for hyps, target in zip(results, OVERFIT_TARGETS, strict=True):
        assert hyps[0].tokens == target
        assert hyps[0].log_prob > -0.5
        assert all(h.log_prob < hyps[0].log_prob for h in hyps[1:])  # the rest are clearly worse


# ---------------------------------------------------------------------------------------------
# Batching: a batch equals its sentences searched alone


@pytest.mark.parametrize("name", MODELS)
def test_batched_greedy_equals_each_sentence_alone(all_models, name: str):
    model, src = all_models[name], sources_for(name)
    cfg = SearchConfig(beam=1)
    batched = greedy_search(model, src, cfg)
    for row in range(src.size(0)):
        alone_src = src[row: row + 1, : words_of(src[row]) + 1]  # no padding column at all
        assert_same(batched[row], greedy_search(model, alone_src, cfg)[0], f"sentence {row}")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam", [2, 4])
def test_batched_beam_equals_each_sentence_alone(all_models, name: str, beam: int):
    model, src = all_models[name], sources_for(name)
    cfg = SearchConfig(beam=beam, nbest=beam, lenpen=1.0)
    batched = beam_search(model, src, cfg)
    assert len(batched) == src.size(0)
    for row in range(src.size(0)):
        alone_src = src[row: row + 1, : words_of(src[row]) + 1]
        alone = beam_search(model, alone_src, cfg)[0]
        assert len(alone) == len(batched[row])
        for rank, (hyp, expected) in enumerate(zip(batched[row], alone, strict=True)):
            assert_same(hyp, expected, f"sentence {row}, rank {rank}")


# ---------------------------------------------------------------------------------------------
# n-best lists and scores


@pytest.mark.parametrize("name", MODELS)
def test_nbest_is_sorted_complete_and_starts_with_the_one_best(all_models, name: str):
    model, src = all_models[name], sources_for(name)
    nbest = beam_search(model, src, SearchConfig(beam=4, nbest=4, lenpen=1.0))
    one_best = beam_search(model, src, SearchConfig(beam=4, nbest=1, lenpen=1.0))
    for row, (hyps, best) in enumerate(zip(nbest, one_best, strict=True)):
        assert len(hyps) == 4 and len(best) == 1
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True), f"sentence {row}"
        assert_same(hyps[0], best[0], f"sentence {row}")
        assert len({tuple(h.tokens) for h in hyps}) == 4  # four different hypotheses


@pytest.mark.parametrize("lenpen", [0.0, 1.0, 2.0])
def test_one_best_does_not_depend_on_nbest(lenpen: float):
    """Asking for more alternatives must not change the best translation."""
    src = source_batch(random_sources(34, [3, 6, 9, 4, 7, 2, 5, 8, 1, 6]))
    for seed in (0, 1):
        model = eos_prone_model(seed, boost=1.0)
        one = beam_search(model, src, SearchConfig(beam=4, nbest=1, lenpen=lenpen))
        for nbest in (2, 4):
            more = beam_search(model, src, SearchConfig(beam=4, nbest=nbest, lenpen=lenpen))
            for row, (best, hyps) in enumerate(zip(one, more, strict=True)):
                assert len(hyps) == nbest
                assert_same(hyps[0], best[0], f"model {seed}, sentence {row}, nbest {nbest}")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("lenpen", [0.0, 1.0, 2.0])
def test_log_prob_equals_teacher_forced_rescoring(all_models, name: str, lenpen: float):
    model, src = all_models[name], sources_for(name)
    results = {
        "greedy": [[h] for h in greedy_search(model, src, SearchConfig(beam=1, lenpen=lenpen))],
        "beam": beam_search(model, src, SearchConfig(beam=3, nbest=3, lenpen=lenpen)),
    }
    for kind, per_sentence in results.items():
        for row, hyps in enumerate(per_sentence):
            for hyp in hyps:
                alone = src[row, : words_of(src[row]) + 1]
                rescored = teacher_forced_log_prob(model, alone, hyp.tokens)
                assert hyp.log_prob == pytest.approx(rescored, abs=TOL), (kind, row, hyp.tokens)
                expected_score = hyp.log_prob / (len(hyp.tokens) + 1) ** lenpen
                assert hyp.score == pytest.approx(expected_score, abs=TOL), (kind, row)


@pytest.mark.parametrize("name", MODELS)
def test_hypotheses_hold_only_words(all_models, name: str):
    model, src = all_models[name], sources_for(name)
    hyps = [h for hs in beam_search(model, src, SearchConfig(beam=3, nbest=3)) for h in hs]
    hyps += greedy_search(model, src, SearchConfig(beam=1))
    for hyp in hyps:
        # PAD and BOS are never generated, EOS ends a hypothesis and is not part of its tokens
        assert all(isinstance(t, int) and 0 <= t < VOCAB for t in hyp.tokens), hyp.tokens
        assert not {PAD_ID, BOS_ID, EOS_ID} & set(hyp.tokens), hyp.tokens


# ---------------------------------------------------------------------------------------------
# Length penalty and length limit


def mean_length(results: list[list[Hypothesis]]) -> float:
    return sum(len(hyps[0].tokens) for hyps in results) / len(results)


def test_larger_length_penalty_never_shortens_hypotheses_on_average(all_models):
    model = all_models["eos-prone"]
    src = source_batch(random_sources(32, [4, 7, 2, 9, 5, 6, 3, 8]))
    means = [mean_length(beam_search(model, src, SearchConfig(beam=5, lenpen=alpha)))
             for alpha in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert means == sorted(means), means
    assert means[-1] > means[0], f"lengths never varied, the test is vacuous: {means}"


def test_length_penalty_formula():
    assert length_penalty(-6.0, 3, 0.0) == -6.0
    assert length_penalty(-6.0, 3, 1.0) == pytest.approx(-2.0)
    assert length_penalty(-8.0, 4, 0.5) == pytest.approx(-4.0)


@pytest.mark.parametrize("a, b", [(0.0, 1), (0.5, 2), (1.0, 3), (1.5, 10)])
def test_max_length_is_respected(all_models, a: float, b: int):
    model = all_models["random"]  # a random model rarely says EOS: it runs into the limit
    src = sources_for("random")
    cfg = SearchConfig(beam=3, nbest=3, max_len_a=a, max_len_b=b)
    limits = [limit_of(words_of(src[row]), cfg) for row in range(src.size(0))]
    assert max_lengths(src, cfg).tolist() == limits
    greedy = greedy_search(model, src, cfg)
    beam = beam_search(model, src, cfg)
    hit = 0
    for row, limit in enumerate(limits):
        assert len(greedy[row].tokens) <= limit
        assert all(len(h.tokens) <= limit for h in beam[row])
        hit += len(greedy[row].tokens) == limit
    assert hit > 0, "no hypothesis reached its limit: the test checks nothing"


def test_max_lengths_counts_words_not_eos_or_padding():
    src = source_batch([[5, 6, 7, 8], [5]], width=9)
    assert max_lengths(src, SearchConfig(max_len_a=2.0, max_len_b=3)).tolist() == [11, 5]
    assert max_lengths(src, SearchConfig(max_len_a=0.0, max_len_b=1)).tolist() == [1, 1]


# ---------------------------------------------------------------------------------------------
# The cache changes nothing: search equals the cache-free reference


@pytest.mark.parametrize("name", MODELS)
def test_greedy_equals_cache_free_reference(all_models, name: str):
    model, src = all_models[name], sources_for(name)
    cfg = SearchConfig(beam=1, lenpen=1.0)
    for row, hyp in enumerate(greedy_search(model, src, cfg)):
        assert_same(hyp, reference_greedy(model, src[row], cfg), f"sentence {row}")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam, lenpen", [(2, 1.0), (4, 0.0), (4, 1.0), (5, 2.0)])
def test_beam_equals_cache_free_reference(all_models, name: str, beam: int, lenpen: float):
    model, src = all_models[name], sources_for(name)
    cfg = SearchConfig(beam=beam, nbest=beam, lenpen=lenpen, max_len_a=1.0, max_len_b=4)
    for row, hyps in enumerate(beam_search(model, src, cfg)):
        expected = reference_beam(model, src[row], cfg)
        assert len(hyps) == len(expected)
        for rank, (hyp, ref) in enumerate(zip(hyps, expected, strict=True)):
            assert_same(hyp, ref, f"sentence {row}, rank {rank}")


@pytest.mark.parametrize("vocab, beam", [(8, 6), (6, 5), (20, 12)])
def test_beam_wider_than_the_vocabulary_allows_equals_reference(vocab: int, beam: int):
    """Fewer live candidates than 2K: some beams hold -inf scores and must never finish."""
    model = toy_model(7, src_vocab_size=vocab, tgt_vocab_size=vocab)
    with torch.no_grad():
        model.decoder_norm.bias += model.embedding.weight[EOS_ID]  # lengths vary (see above)
    src = source_batch(random_sources(33, [3, 1, 5], vocab=vocab))
    cfg = SearchConfig(beam=beam, nbest=beam, lenpen=1.0, max_len_a=1.0, max_len_b=2)
    for row, hyps in enumerate(beam_search(model, src, cfg)):
        expected = reference_beam(model, src[row], cfg)
        assert len(hyps) == len(expected)
        for rank, (hyp, ref) in enumerate(zip(hyps, expected, strict=True)):
            assert_same(hyp, ref, f"sentence {row}, rank {rank}")
            assert math.isfinite(hyp.score)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("beam", [1, 4])
def test_search_on_gpu_equals_search_on_cpu(all_models, beam: int):
    model, src = all_models["eos-prone"], sources_for("eos-prone")
    cfg = SearchConfig(beam=beam, nbest=beam)
    on_cpu = search(model, src, cfg)
    gpu_model = eos_prone_model().cuda()
    on_gpu = search(gpu_model, src.cuda(), cfg)
    for row, (cpu_hyps, gpu_hyps) in enumerate(zip(on_cpu, on_gpu, strict=True)):
        assert [h.tokens for h in gpu_hyps] == [h.tokens for h in cpu_hyps], row
        for g, c in zip(gpu_hyps, cpu_hyps, strict=True):
            assert g.log_prob == pytest.approx(c.log_prob, abs=1e-3)


class CacheFreeModel:
    """The model as search sees it, but every decode re-runs the whole prefix without a cache.

    The prefix of ids of each row rides in the cache's self-attention slots, so the search's own
    reorder_cache keeps it aligned with the beams as they are re-ranked and leave the batch.
    This runs the library's search algorithm itself, whatever its stopping rule.
    """

    def __init__(self, model: Transformer):
        self.model = model

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode(src, src_mask)

    def step_logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.model.step_logits(states)

    def new_cache(self) -> list[LayerCache]:
        return [LayerCache()]

    def decode_step(self, last: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                    cache: list[LayerCache]) -> torch.Tensor:
        layer = cache[0]
        prefix = last[:, None] if layer.self_k is None else torch.cat([layer.self_k, last[:, None]], dim=1)
        layer.self_k = layer.self_v = prefix  # (R, t)
        group = last.size(0) // memory.size(0)  # rows per source (decode_step's contract)
        memory, src_mask = memory.repeat_interleave(group, 0), src_mask.repeat_interleave(group, 0)
        return self.model.decode(prefix, memory, src_mask)[:, -1]  # (R, D)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam, nbest, lenpen",
                         [(1, 1, 1.0), (3, 1, 1.0), (4, 2, 0.0), (5, 5, 2.0)])
def test_search_with_cache_equals_search_without(all_models, name: str, beam: int, nbest: int,
                                                 lenpen: float):
    model, src = all_models[name], sources_for(name)
    cfg = SearchConfig(beam=beam, nbest=nbest, lenpen=lenpen, max_len_a=1.0, max_len_b=4)
    cached = search(model, src, cfg)
    cache_free = search(CacheFreeModel(model), src, cfg)
    for row, (hyps, expected) in enumerate(zip(cached, cache_free, strict=True)):
        assert len(hyps) == len(expected) == nbest
        for rank, (hyp, ref) in enumerate(zip(hyps, expected, strict=True)):
            assert_same(hyp, ref, f"sentence {row}, rank {rank}")


class DecodeRowCounter(CacheFreeModel):
    """The cache-free model, also noting how many rows each decoder step is asked for."""

    def __init__(self, model: Transformer):
        super().__init__(model)
        self.rows: list[int] = []

    def decode_step(self, last: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                    cache: list[LayerCache]) -> torch.Tensor:
        self.rows.append(last.size(0))
        return super().decode_step(last, memory, src_mask, cache)


def test_beam_decodes_the_first_step_once_per_sentence(all_models):
    """At the first step the K beams of a sentence are the same BOS, so each sentence is decoded
    once there; the next step has its K beams. The result is checked against the reference."""
    model, src = all_models["random"], sources_for("random")
    cfg = SearchConfig(beam=4, nbest=4, max_len_a=1.0, max_len_b=4)
    counter = DecodeRowCounter(model)
    hyps = beam_search(counter, src, cfg)
    assert counter.rows[:2] == [src.size(0), src.size(0) * cfg.beam]
    for row in range(src.size(0)):
        for hyp, ref in zip(hyps[row], reference_beam(model, src[row], cfg), strict=True):
            assert_same(hyp, ref, f"sentence {row}")


def test_reference_beam_of_one_is_reference_greedy(all_models):
    """The two references agree with each other, so neither is vacuous."""
    model, src = all_models["eos-prone"], sources_for("eos-prone")
    cfg = SearchConfig(beam=1, nbest=1, lenpen=1.0)
    for row in range(src.size(0)):
        assert_same(reference_beam(model, src[row], cfg)[0], reference_greedy(model, src[row], cfg))


def test_search_leaves_the_model_unchanged(all_models):
    model, src = all_models["eos-prone"], sources_for("eos-prone")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    beam_search(model, src, SearchConfig(beam=3))
    greedy_search(model, src, SearchConfig(beam=1))
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k



@pytest.mark.parametrize("bound", [
    dict(lenpen=MAX_LENPEN, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B),
    dict(beam=MAX_SEARCH_BEAM, nbest=MAX_SEARCH_BEAM, batch_tokens=MAX_BATCH_TOKENS),
    dict(sample=MAX_TOP_K, temperature=MAX_TEMPERATURE, seed=MAX_SEED, nbest=MAX_SAMPLES),
    dict(sample=0, temperature=MAX_TEMPERATURE, top_p=1e-9),
])
def test_every_search_option_works_at_its_upper_bound(bound):
    """Each bound is one that works: finite scores, sentences that end (the limit included)."""
    cfg = SearchConfig(**bound)
    model = toy_model(seed=3)
    src = source_batch(random_sources(0, [6, 4]))
    found = sample(model, src, cfg) if cfg.sampling else search(model, src, cfg)
    assert len(found) == 2 and all(len(hyps) == cfg.nbest for hyps in found)
    assert all(math.isfinite(h.score) for hyps in found for h in hyps)
