"""Properties of the Transformer at toy sizes: shapes, positions, masks, the cache, overfitting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers_model import (OVERFIT_SOURCES, OVERFIT_TARGETS, VOCAB, overfit_losses, overfit_model,
                           pad_rows, random_sources, source_batch, toy_config, toy_model)
from tinytrans.config import ModelConfig, parameter_count
from tinytrans.model import (FUSED_ATTENTION_ROWS, AttentionWeights, LayerCache, StepOutputMatrix,
                             Transformer,
                             attention, batched_attention, causal_mask, mask_as_scores,
                             count_parameters, padding_mask, reorder_cache, sinusoidal_encoding)
from tinytrans.config import SearchConfig
from tinytrans.search import greedy_search
from tinytrans.quantize import quantize_dynamic_int8
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID

ATOL = 1e-5
NORMS = pytest.mark.parametrize("pre_norm", [True, False], ids=["pre-norm", "post-norm"])


def random_targets(seed: int, lengths: list[int]) -> torch.Tensor:
    """(B, T) decoder inputs: BOS followed by random words, right-padded."""
    return pad_rows([[BOS_ID] + words for words in random_sources(seed, lengths)])


def encode(model: Transformer, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    src_mask = padding_mask(src)
    return model.encode(src, src_mask), src_mask


def full_decode(model: Transformer, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    memory, src_mask = encode(model, src)
    return model.decode(tgt, memory, src_mask)


# ---------------------------------------------------------------------------------------------
# Shapes


@NORMS
def test_shapes_of_encode_decode_logits_forward(pre_norm: bool):
    model = toy_model(pre_norm=pre_norm)
    src = source_batch(random_sources(1, [5, 3, 7]))  # (3, 8)
    tgt = random_targets(2, [4, 6, 2])  # (3, 7)
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        states = model.decode(tgt, memory, src_mask)
        logits = model.logits(states)
        forward = model(src, tgt)
    assert src_mask.shape == (3, 1, 1, 8) and src_mask.dtype == torch.bool
    assert memory.shape == (3, 8, 32)
    assert states.shape == (3, 7, 32)
    assert logits.shape == (3, 7, VOCAB)
    assert forward.shape == (3, 7, VOCAB)
    assert torch.allclose(forward, logits, atol=ATOL)
    assert torch.isfinite(forward).all()
    # logits also take any leading shape, e.g. the flat (tokens, D) of the training loop
    assert model.logits(states[tgt != PAD_ID]).shape == (int((tgt != PAD_ID).sum()), VOCAB)


def test_mask_helpers():
    ids = torch.tensor([[5, 6, EOS_ID, PAD_ID], [5, EOS_ID, PAD_ID, PAD_ID]])
    assert padding_mask(ids).tolist() == [[[[True, True, True, False]]],
                                          [[[True, True, False, False]]]]
    mask = causal_mask(3)
    assert mask.shape == (1, 1, 3, 3)
    assert mask[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_d_model_not_divisible_by_heads_is_refused():
    from tinytrans.errors import UserError
    with pytest.raises(UserError, match="divisible"):
        ModelConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=30, n_heads=4)


# ---------------------------------------------------------------------------------------------
# Positional encoding, checked against the paper's formula computed here with `math`


def formula(pos: int, j: int, d_model: int) -> float:
    angle = pos / 10000 ** ((j - j % 2) / d_model)  # columns 2i and 2i+1 share the angle
    return math.sin(angle) if j % 2 == 0 else math.cos(angle)


def assert_matches_formula(encoding: torch.Tensor, first_pos: int, d_model: int) -> None:
    for row in range(encoding.size(0)):
        pos = first_pos + row
        expected = torch.tensor([formula(pos, j, d_model) for j in range(d_model)],
                                dtype=torch.float64)
        # float32 angles carry a relative error of a few 1e-8, i.e. an absolute one growing with pos
        tolerance = 1e-6 + 4e-7 * pos
        error = (encoding[row].double() - expected).abs().max().item()
        assert error <= tolerance, f"position {pos}: off by {error}"


@pytest.mark.parametrize("d_model", [32, 16, 6])
def test_sinusoidal_encoding_equals_formula(d_model: int):
    encoding = sinusoidal_encoding(50, d_model)
    assert encoding.shape == (50, d_model) and encoding.dtype == torch.float32
    assert_matches_formula(encoding, 0, d_model)
    assert encoding[0, 0::2].abs().max() == 0 and (encoding[0, 1::2] == 1).all()  # sin 0, cos 0


def test_sinusoidal_encoding_with_offset_equals_formula_and_the_full_table():
    d_model = 32
    shifted = sinusoidal_encoding(7, d_model, offset=13)
    assert shifted.shape == (7, d_model)
    assert_matches_formula(shifted, 13, d_model)
    assert torch.allclose(shifted, sinusoidal_encoding(20, d_model)[13:], atol=1e-6)


def test_sinusoidal_encoding_beyond_any_training_length():
    d_model = 16
    long = sinusoidal_encoding(3000, d_model)
    assert long.shape == (3000, d_model) and torch.isfinite(long).all()
    assert long.abs().max() <= 1.0 + 1e-6
    rows = torch.tensor([0, 1, 511, 1024, 2047, 2999])
    for row in rows.tolist():
        assert_matches_formula(long[row: row + 1], row, d_model)
    tail = sinusoidal_encoding(5, d_model, offset=2995)
    assert_matches_formula(tail, 2995, d_model)
    assert torch.allclose(tail, long[2995:], atol=1e-5)


def test_positions_are_added_to_scaled_embeddings():
    model = toy_model()
    ids = torch.tensor([[5, 6, 7]])
    expected = model.embedding(ids) * math.sqrt(32) + sinusoidal_encoding(3, 32)
    assert torch.allclose(model.embed(model.embedding, ids), expected, atol=ATOL)
    # the padding row of the embedding is zero, so PAD contributes nothing but its position
    assert model.embedding.weight[PAD_ID].abs().max() == 0


# ---------------------------------------------------------------------------------------------
# Masks: the future and the padding are invisible


@NORMS
def test_changing_a_later_target_token_leaves_earlier_outputs_unchanged(pre_norm: bool):
    model = toy_model(pre_norm=pre_norm)
    src = source_batch(random_sources(3, [6, 4]))
    tgt = random_targets(4, [6, 6])  # (2, 7), no padding
    with torch.no_grad():
        before = full_decode(model, src, tgt)
        for position in (1, 4, 6):
            changed = tgt.clone()
            changed[:, position] = 4 + (changed[:, position] - 4 + 5) % (VOCAB - 4)
            after = full_decode(model, src, changed)
            assert torch.allclose(after[:, :position], before[:, :position], atol=ATOL), position
            # ... and it does change this position and every later one
            difference = (after[:, position:] - before[:, position:]).abs().amax(dim=-1)  # (B, T-p)
            assert (difference > 1e-4).all(), position


@NORMS
def test_extra_source_padding_changes_no_output(pre_norm: bool):
    model = toy_model(pre_norm=pre_norm)
    sentences = random_sources(5, [4, 7, 2])
    tgt = random_targets(6, [5, 5, 5])
    with torch.no_grad():
        batch = source_batch(sentences, width=12)  # every row padded, some by many columns
        memory, src_mask = encode(model, batch)
        batched = model.decode(tgt, memory, src_mask)
        for row, sentence in enumerate(sentences):
            alone_src = source_batch([sentence])  # no padding at all
            alone_memory, _ = encode(model, alone_src)
            alone = full_decode(model, alone_src, tgt[row: row + 1])
            length = len(sentence) + 1
            assert torch.allclose(memory[row, :length], alone_memory[0], atol=ATOL)
            assert torch.allclose(batched[row], alone[0], atol=ATOL)
        # more padding still: unchanged again
        wider = full_decode(model, source_batch(sentences, width=20), tgt)
        assert torch.allclose(wider, batched, atol=ATOL)


def test_padding_token_content_is_ignored_in_source():
    """Only the mask matters: any id at padded source positions changes nothing."""
    model = toy_model()
    src = source_batch(random_sources(7, [3, 6]))
    tgt = random_targets(8, [4, 4])
    src_mask = padding_mask(src)
    garbage = src.masked_fill(src == PAD_ID, 9)
    with torch.no_grad():
        clean = model.decode(tgt, model.encode(src, src_mask), src_mask)
        dirty = model.decode(tgt, model.encode(garbage, src_mask), src_mask)
    assert torch.allclose(clean, dirty, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Incremental decoding with the key/value cache


def incremental_decode(model: Transformer, tgt: torch.Tensor, memory: torch.Tensor,
                       src_mask: torch.Tensor, cache: list, first: int = 1) -> torch.Tensor:
    """Feed tgt[:, :first] at once, then one token per step; returns all states (B, T, D)."""
    steps = [model.decode(tgt[:, :first], memory, src_mask, cache)]
    for t in range(first, tgt.size(1)):
        steps.append(model.decode(tgt[:, t: t + 1], memory, src_mask, cache))
    return torch.cat(steps, dim=1)


@NORMS
@pytest.mark.parametrize("first", [1, 3])
def test_cached_incremental_decoding_equals_full_decoding(pre_norm: bool, first: int):
    model = toy_model(pre_norm=pre_norm)
    src = source_batch(random_sources(9, [5, 2, 8]))
    tgt = random_targets(10, [7, 7, 7])
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        full = model.decode(tgt, memory, src_mask)
        cache = model.new_cache()
        stepwise = incremental_decode(model, tgt, memory, src_mask, cache, first)
    assert stepwise.shape == full.shape
    assert torch.allclose(stepwise, full, atol=ATOL)
    assert len(cache) == 2
    for layer in cache:
        assert layer.self_k.shape == layer.self_v.shape == (3, 2, tgt.size(1), 16)
        assert layer.cross_k.shape == layer.cross_v.shape == (3, 2, src.size(1), 16)
        assert layer.length == tgt.size(1)


@NORMS
def test_decode_step_is_cached_decoding_of_one_token(pre_norm: bool):
    """The search's lean step computes what decode computes for one new token with a cache,
    step after step and after the beams are reordered (decode attends with PyTorch's fused
    kernel, the step with the written-out maths: the sums may differ in the last bits)."""
    model = toy_model(pre_norm=pre_norm)
    src = source_batch(random_sources(15, [5, 2, 8]))  # padded rows: the source mask matters
    tgt = random_targets(16, [6, 6, 6])
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        full = model.decode(tgt, memory, src_mask)
        general, lean = model.new_cache(), model.new_cache()
        for t in range(tgt.size(1)):
            expected = model.decode(tgt[:, t: t + 1], memory, src_mask, general)[:, -1]
            got = model.decode_step(tgt[:, t], memory, src_mask, lean)  # (B, D)
            assert torch.allclose(got, expected, atol=ATOL), f"step {t}"
            assert torch.allclose(got, full[:, t], atol=ATOL)
        index = torch.tensor([2, 2, 0])
        reorder_cache(general, index, index)
        reorder_cache(lean, index, index)
        memory, src_mask, last = memory[index], src_mask[index], tgt[index, -1]
        expected = model.decode(last[:, None], memory, src_mask, general)[:, -1]
        assert torch.allclose(model.decode_step(last, memory, src_mask, lean), expected, atol=ATOL)
    for general_layer, lean_layer in zip(general, lean, strict=True):
        assert lean_layer.length == general_layer.length == tgt.size(1) + 1


@NORMS
def test_decode_step_reads_each_source_once_for_its_block_of_rows(pre_norm: bool):
    """Memory given once per source, with G rows per source, is decoding with the memory
    repeated for every row: the beams of a sentence attend to its source together."""
    model = toy_model(pre_norm=pre_norm)
    src = source_batch(random_sources(17, [5, 2, 8]))  # padded: the mask is per source too
    G = 6  # 18 rows: more than FUSED_ATTENTION_ROWS, so batched_attention's path too
    assert 3 * G > FUSED_ATTENTION_ROWS
    tgt = random_targets(18, [5] * (3 * G))  # (18, 6): rows 0-5 read source 0, 6-11 source 1, ...
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        per_row = (memory.repeat_interleave(G, 0), src_mask.repeat_interleave(G, 0))
        grouped, one_each = model.new_cache(), model.new_cache()
        for t in range(tgt.size(1)):
            got = model.decode_step(tgt[:, t], memory, src_mask, grouped)  # (18, D)
            expected = model.decode_step(tgt[:, t], *per_row, one_each)
            assert torch.allclose(got, expected, atol=ATOL), f"step {t}"
    for layer in grouped:
        assert layer.cross_k.size(0) == 3 and layer.self_k.size(0) == 18


def test_decode_step_without_a_source_mask_attends_to_every_source_position():
    model = toy_model()
    src = source_batch(random_sources(19, [4, 4]))  # no padding: a mask of all True
    last = random_targets(20, [1] * 6)[:, 0]  # 3 rows per source
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        masked = model.decode_step(last, memory, src_mask, model.new_cache())
        unmasked = model.decode_step(last, memory, None, model.new_cache())
    assert bool(src_mask.all()) and torch.allclose(masked, unmasked, atol=ATOL)


def test_cache_after_reorder_equals_full_decoding_of_reordered_batch():
    model = toy_model()
    src = source_batch(random_sources(11, [5, 2, 8, 4]))
    tgt = random_targets(12, [6, 6, 6, 6])  # (4, 7)
    split = 4
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        cache = model.new_cache()
        incremental_decode(model, tgt[:, :split], memory, src_mask, cache)
        # first a permutation, then a repeat of one row and the drop of another
        for index in (torch.tensor([2, 0, 3, 1]), torch.tensor([1, 1, 3])):
            reorder_cache(cache, index, index)
            tgt, memory, src_mask = tgt[index], memory[index], src_mask[index]
            rest = [model.decode(tgt[:, t: t + 1], memory, src_mask, cache)
                    for t in (split, split + 1)]
            expected = model.decode(tgt[:, : split + 2], memory, src_mask)[:, split:]
            assert torch.allclose(torch.cat(rest, dim=1), expected, atol=ATOL)
            split += 2


def test_reorder_cache_without_sources_keeps_cross_attention():
    model = toy_model()
    src = source_batch(random_sources(13, [3, 3]))
    tgt = random_targets(14, [2, 2])
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        cache = model.new_cache()
        model.decode(tgt, memory, src_mask, cache)
    before = [LayerCache(layer.self_k.clone(), layer.self_v.clone(), layer.cross_k.clone(),
                         layer.cross_v.clone()) for layer in cache]
    reorder_cache(cache, torch.tensor([1, 0]))
    for old, new in zip(before, cache, strict=True):
        assert torch.equal(new.cross_k, old.cross_k)
        assert torch.equal(new.cross_v, old.cross_v)
        assert torch.equal(new.self_k, old.self_k[[1, 0]])
        assert torch.equal(new.self_v, old.self_v[[1, 0]])


# ---------------------------------------------------------------------------------------------
# Attention: the written-out function, and the weights the model can return


@pytest.mark.parametrize("with_mask", [False, True])
def test_batched_attention_is_attention_with_the_mask_as_added_scores(with_mask: bool):
    generator = torch.Generator().manual_seed(16)
    q = torch.randn(3, 2, 4, 8, generator=generator)  # 4 queries per row, as the beams of a source
    k = torch.randn(3, 2, 6, 8, generator=generator)
    v = torch.randn(3, 2, 6, 8, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]],
                        dtype=torch.bool)[:, None, None, :] if with_mask else None
    added = mask_as_scores(mask, 2, q.dtype) if with_mask else None
    if with_mask:
        assert added.shape == (3, 2, 1, 6) and torch.isinf(added[1, :, 0, 3:]).all()
        assert (added[mask.expand(-1, 2, -1, -1)] == 0).all()
    expected, _ = attention(q, k, v, mask)
    assert torch.allclose(batched_attention(q, k, v, added), expected, atol=1e-6)


@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal"])
def test_written_out_attention_equals_sdpa(mask_kind: str):
    generator = torch.Generator().manual_seed(15)
    q = torch.randn(3, 2, 5, 8, generator=generator)
    k = torch.randn(3, 2, 5, 8, generator=generator)
    v = torch.randn(3, 2, 5, 8, generator=generator)
    if mask_kind == "none":
        mask, expected = None, F.scaled_dot_product_attention(q, k, v)
    elif mask_kind == "padding":
        mask = padding_mask(torch.tensor([[5, 5, 5, 3, 0], [5, 3, 0, 0, 0], [5, 5, 5, 5, 3]]))
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        mask, expected = causal_mask(5), F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out, weights = attention(q, k, v, mask)
    assert out.shape == (3, 2, 5, 8) and weights.shape == (3, 2, 5, 5)
    assert torch.allclose(out, expected, atol=ATOL)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 2, 5), atol=ATOL)
    if mask is not None:
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()
    # and it is softmax(QK^T / sqrt(Dh)) V by definition
    bias = 0 if mask is None else torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    by_hand = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8) + bias, dim=-1) @ v
    assert torch.allclose(out, by_hand, atol=ATOL)


@NORMS
def test_attention_weights_sum_to_one_and_skip_padding(pre_norm: bool):
    model = toy_model(pre_norm=pre_norm)
    src = source_batch(random_sources(16, [6, 2, 4]))  # (3, 7), rows 1 and 2 padded
    tgt = random_targets(17, [3, 3, 3])
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        plain = model.decode(tgt, memory, src_mask)
        weights = AttentionWeights()
        with_weights = model.decode(tgt, memory, src_mask, weights_out=weights)
    assert torch.allclose(with_weights, plain, atol=ATOL)  # the SDPA path gives the same states
    assert len(weights.cross) == 2  # one per decoder layer
    for w in weights.cross:
        assert w.shape == (3, 2, 4, 7)  # (B, H, T, S)
        assert torch.allclose(w.sum(-1), torch.ones(3, 2, 4), atol=ATOL)
        assert (w[1, :, :, 3:] == 0).all() and (w[2, :, :, 5:] == 0).all()
        assert (w[src_mask.expand_as(w)] > 0).all()


def test_attention_weights_with_cache_match_full_decoding():
    model = toy_model()
    src = source_batch(random_sources(18, [4, 6]))
    tgt = random_targets(19, [3, 3])
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        full_weights = AttentionWeights()
        model.decode(tgt, memory, src_mask, weights_out=full_weights)
        cache = model.new_cache()
        for t in range(tgt.size(1)):
            step_weights = AttentionWeights()
            model.decode(tgt[:, t: t + 1], memory, src_mask, cache, weights_out=step_weights)
            for full, step in zip(full_weights.cross, step_weights.cross, strict=True):
                assert torch.allclose(step[:, :, 0], full[:, :, t], atol=ATOL)
            # a cached step sees the past t + 1 positions, as row t of the full causal matrix does
            for full, step in zip(full_weights.decoder, step_weights.decoder, strict=True):
                assert step.shape == (2, 2, 1, t + 1)
                assert torch.allclose(step[:, :, 0], full[:, :, t, : t + 1], atol=ATOL)


@NORMS
def test_encoder_self_attention_weights_skip_padding(pre_norm: bool):
    model = toy_model(pre_norm=pre_norm)
    src = source_batch(random_sources(27, [6, 2]))  # (2, 7), row 1 padded after position 3
    with torch.no_grad():
        src_mask = padding_mask(src)
        weights = AttentionWeights()
        recorded = model.encode(src, src_mask, weights_out=weights)
        assert torch.allclose(recorded, model.encode(src, src_mask), atol=ATOL)
    assert len(weights.encoder) == 2 and not weights.decoder and not weights.cross
    for w in weights.encoder:
        assert w.shape == (2, 2, 7, 7)  # (B, H, S, S)
        assert torch.allclose(w.sum(-1), torch.ones(2, 2, 7), atol=ATOL)
        assert (w[1, :, :, 3:] == 0).all()  # no query attends to padding
        assert (w[0] > 0).all()


def test_decoder_self_attention_weights_never_see_the_future():
    model = toy_model()
    src = source_batch(random_sources(28, [4]))
    tgt = random_targets(29, [5])  # (1, 6)
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        weights = AttentionWeights()
        model.decode(tgt, memory, src_mask, weights_out=weights)
    assert len(weights.decoder) == 2 and len(weights.cross) == 2 and not weights.encoder
    future = ~causal_mask(6)[0, 0]  # (T, T), True above the diagonal
    for w in weights.decoder:
        assert w.shape == (1, 2, 6, 6)
        assert torch.allclose(w.sum(-1), torch.ones(1, 2, 6), atol=ATOL)
        assert (w[0, :, future] == 0).all() and (w[0, :, ~future] > 0).all()


# ---------------------------------------------------------------------------------------------
# Pre-norm and post-norm


@NORMS
def test_stack_outputs_are_layer_normalised(pre_norm: bool):
    """Pre-norm ends each stack with a LayerNorm; post-norm normalises after every residual sum.

    Either way (LayerNorm gain 1 and bias 0 at initialisation) memory and decoder states have
    mean 0 and variance 1 over the features of each position.
    """
    model = toy_model(pre_norm=pre_norm)
    src = source_batch(random_sources(24, [5, 3]))
    tgt = random_targets(25, [4, 4])
    with torch.no_grad():
        memory, src_mask = encode(model, src)
        states = model.decode(tgt, memory, src_mask)
    for x in (memory, states):
        assert torch.allclose(x.mean(-1), torch.zeros(x.shape[:-1]), atol=1e-4)
        assert torch.allclose(x.var(-1, unbiased=False), torch.ones(x.shape[:-1]), atol=1e-3)
    names = set(model.state_dict())
    assert ("encoder_norm.weight" in names) == pre_norm
    assert ("decoder_norm.weight" in names) == pre_norm


def test_post_norm_normalises_every_sub_layer():
    """Post-norm, LN(x + f(x)): every encoder layer's output is normalised, not only the last."""
    model = toy_model(pre_norm=False)
    src = source_batch(random_sources(26, [6]))
    src_mask = padding_mask(src)
    with torch.no_grad():
        x = model.embed(model.src_embed_table, src)
        x = model.encoder_layers[0](x, src_mask)
    assert torch.allclose(x.var(-1, unbiased=False), torch.ones(x.shape[:-1]), atol=1e-3)
    pre = toy_model(pre_norm=True)
    with torch.no_grad():
        y = pre.encoder_layers[0](pre.embed(pre.src_embed_table, src), src_mask)
    assert not torch.allclose(y.var(-1, unbiased=False), torch.ones(y.shape[:-1]), atol=1e-2)


# ---------------------------------------------------------------------------------------------
# Embeddings: tied (one matrix) or not


def test_tied_embeddings_are_one_matrix():
    model = toy_model(tie_embeddings=True)
    names = set(model.state_dict())
    assert "embedding.weight" in names
    assert not any(part in name for name in names
                   for part in ("output_projection", "src_embedding", "tgt_embedding"))
    assert model.src_embed_table is model.tgt_embed_table is model.embedding
    states = torch.randn(2, 3, 32)
    assert torch.allclose(model.logits(states), states @ model.embedding.weight.T, atol=ATOL)


def test_untied_embeddings_are_three_matrices():
    tied = toy_model(tie_embeddings=True)
    model = toy_model(tie_embeddings=False, tgt_vocab_size=VOCAB + 5)
    names = set(model.state_dict())
    assert {"src_embedding.weight", "tgt_embedding.weight", "output_projection.weight"} <= names
    assert "embedding.weight" not in names
    assert model.output_projection.weight.shape == (VOCAB + 5, 32)
    assert model.output_projection.bias is None
    src = source_batch(random_sources(20, [3]))
    tgt = random_targets(21, [2])
    with torch.no_grad():
        assert model(src, tgt).shape == (1, 3, VOCAB + 5)
    # untied adds exactly the two extra vocab x d_model matrices (here of differing sizes)
    assert count_parameters(model) - count_parameters(tied) == (VOCAB + 5) * 32 * 2


def test_tied_embeddings_need_one_vocabulary():
    from tinytrans.errors import UserError
    with pytest.raises(UserError):
        toy_config(tie_embeddings=True, tgt_vocab_size=VOCAB + 1)


def test_padding_rows_start_at_zero_in_untied_tables():
    model = toy_model(tie_embeddings=False)
    assert model.src_embedding.weight[PAD_ID].abs().max() == 0
    assert model.tgt_embedding.weight[PAD_ID].abs().max() == 0


# ---------------------------------------------------------------------------------------------
# Dropout and modes


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    torch.manual_seed(0)
    model = Transformer(toy_config(dropout=0.3, attention_dropout=0.3, activation_dropout=0.3))
    src = source_batch(random_sources(22, [5, 3]))
    tgt = random_targets(23, [4, 4])
    model.eval()
    with torch.no_grad():
        a, b = model(src, tgt), model(src, tgt)
        memory, src_mask = encode(model, src)
        plain = model.decode(tgt, memory, src_mask)
        written_out = model.decode(tgt, memory, src_mask, weights_out=AttentionWeights())
    assert torch.equal(a, b)
    assert torch.allclose(plain, written_out, atol=ATOL)  # no dropout on the weights in eval mode
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(src, tgt), model(src, tgt))


# ---------------------------------------------------------------------------------------------
# A tiny model overfits a handful of pairs


def test_tiny_model_overfits_and_greedy_reproduces_targets():
    losses = overfit_losses()
    assert losses[0] > 1.0  # it started from chance (about log 20 = 3.0 nats per token)
    assert losses[-1] < 0.05, losses[-1]
    model = overfit_model()
    src = source_batch(OVERFIT_SOURCES)
    hyps = greedy_search(model, src, SearchConfig(beam=1))
    assert [h.tokens for h in hyps] == OVERFIT_TARGETS
    for hyp in hyps:
        assert -0.5 < hyp.log_prob <= 0.0
    # the teacher-forced loss at evaluation time agrees with the training loss
    tgt_in = pad_rows([[BOS_ID] + t for t in OVERFIT_TARGETS])
    tgt_out = pad_rows([t + [EOS_ID] for t in OVERFIT_TARGETS])
    with torch.no_grad():
        log_probs = model(src, tgt_in).log_softmax(-1)
    keep = tgt_out != PAD_ID
    nll = -log_probs.gather(-1, tgt_out[..., None])[..., 0][keep].mean()
    assert nll < 0.05


# ---------------------------------------------------------------------------------------------
# Dropout from random bytes

@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_zeroes_p_of_the_elements_and_keeps_the_mean(p: float) -> None:
    from tinytrans.model import Dropout
    torch.manual_seed(0)
    x = torch.ones(512, 1024)
    out = Dropout(p).train()(x)
    zeroed = (out == 0).float().mean().item()
    p_used = 1 - round((1 - p) * 256) / 256  # p rounded to a multiple of 1/256
    assert abs(zeroed - p_used) < 0.004
    assert abs(out.mean().item() - 1.0) < 0.01  # expectation preserved by the 1/(1-p) scale
    values = out.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - p_used))]


def test_dropout_is_the_identity_in_eval_mode_and_at_zero() -> None:
    from tinytrans.model import Dropout
    x = torch.randn(3, 5)
    assert Dropout(0.3).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


def test_dropout_gradient_flows_only_through_kept_elements() -> None:
    from tinytrans.model import Dropout
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)  # an odd size: the last random word is partly used
    out = Dropout(0.25).train()(x)
    out.sum().backward()
    kept = out != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 256 / 192))
    assert (x.grad[~kept] == 0).all()


def test_dropout_masks_differ_between_calls_and_follow_the_seed() -> None:
    from tinytrans.model import Dropout
    layer, x = Dropout(0.5).train(), torch.ones(1000)
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert not torch.equal(first, second) and torch.equal(layer(x), first)


@pytest.mark.parametrize("pre_norm", [True, False])
@pytest.mark.parametrize("tie", [True, False])
def test_the_configs_parameter_count_is_the_models(pre_norm: bool, tie: bool):
    """config.parameter_count, which refuses models too big for the machine before they are
    built, counts exactly what Transformer builds."""
    cfg = ModelConfig(src_vocab_size=50, tgt_vocab_size=50 if tie else 70, d_model=16, n_heads=2,
                      d_ff=24, n_encoder_layers=2, n_decoder_layers=3, pre_norm=pre_norm,
                      tie_embeddings=tie)
    assert parameter_count(cfg) == count_parameters(Transformer(cfg))


@pytest.mark.parametrize("tied", [True, False])
def test_step_logits_are_the_logits_and_follow_the_weights_as_they_change(tied):
    model = toy_model(4, tie_embeddings=tied)
    states = torch.randn(5, model.cfg.d_model)
    assert torch.allclose(model.step_logits(states), model.logits(states), atol=1e-5)
    with torch.no_grad():  # an optimizer step: the matrix changes in place
        (model.embedding if tied else model.output_projection).weight.mul_(2.0)
    assert torch.allclose(model.step_logits(states), model.logits(states), atol=1e-5)
    model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})
    assert torch.allclose(model.step_logits(states), model.logits(states), atol=1e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_step_logits_follow_training_updates_by_the_fused_optimizer(tied):
    """Training's Adam (schedule.make_optimizer: fused) changes the weights without counting
    their versions: validation after updates (eval(), as validate() does) must not read the
    output matrix of an earlier validation."""
    from tinytrans.config import RunConfig, DataConfig, TrainConfig
    from tinytrans.schedule import make_optimizer
    model = toy_model(4, tie_embeddings=tied)
    optimizer = make_optimizer(model, RunConfig(model.cfg, DataConfig(), TrainConfig(lr=0.5)))
    states = torch.randn(5, model.cfg.d_model)
    for _ in range(2):  # validate, train a step, validate
        model.eval()
        with torch.inference_mode():
            assert torch.allclose(model.step_logits(states), model.logits(states), atol=1e-5)
        model.train()
        model.logits(torch.randn(3, model.cfg.d_model)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_step_output_matrix_multiplies_as_f_linear(dtype):
    """oneDNN's layout (fp32 on a CPU) or the (D, V) copy (else): the logits of F.linear for a
    step's few rows and a batch's many, and autocast's states too."""
    weight = torch.randn(300, 16, generator=torch.Generator().manual_seed(3)).to(dtype)
    matrix = StepOutputMatrix(weight)
    assert matrix.onednn == (dtype == torch.float32 and torch.backends.mkldnn.is_available())
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    for rows in (1, 5, 40):
        states = torch.randn(rows, 16, generator=torch.Generator().manual_seed(rows)).to(dtype)
        got = matrix.times(states)
        assert got.shape == (rows, 300) and got.dtype == dtype
        assert torch.allclose(got.float(), F.linear(states, weight).float(), atol=tolerance, rtol=tolerance)
    if dtype == torch.float32:  # autocast's bf16 states against the fp32 matrix: as F.linear does
        states = torch.randn(2, 16).bfloat16()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(matrix.times(states), F.linear(states, weight))


def test_step_logits_of_a_model_made_under_inference_mode():
    with torch.inference_mode():  # its weights are inference tensors: they keep no version
        model = toy_model(4)
        states = torch.randn(3, model.cfg.d_model)
        assert torch.equal(model.step_logits(states), model.logits(states))


def test_step_logits_of_a_quantised_model_are_its_own():
    model = quantize_dynamic_int8(toy_model(4))
    states = torch.randn(3, model.cfg.d_model)
    assert torch.equal(model.step_logits(states), model.logits(states))


def test_positions_come_from_a_table_that_grows_and_equal_the_formula():
    model = toy_model(0)
    D = model.cfg.d_model
    assert torch.equal(model.positions(0, 7, torch.device("cpu")), sinusoidal_encoding(7, D))
    far = model.positions(300, 5, torch.device("cpu"))  # past the first table
    assert torch.equal(far, sinusoidal_encoding(5, D, offset=300))
