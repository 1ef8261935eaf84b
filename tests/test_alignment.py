"""Word alignment from cross-attention: pieces to words, the pooling rule, the chosen layer, the
mapping onto the texts' words, and a hand-built model whose attention is known in advance."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_model import source_batch, toy_model
from tinytrans.lines import format_alignment
from tinytrans.alignment import (ALIGNMENT_LAYER_DEFAULT, align_words_to_text, alignment_layer,
                                 piece_words, word_alignment, word_ids)
from tinytrans.errors import UserError
from tinytrans.model import AttentionWeights, Transformer
from tinytrans.tokenizer import BOS_ID
from tinytrans.translate import forced_log_probs

PHARAOH = re.compile(r"^(\d+-\d+)( \d+-\d+)*$")
EXAMPLES = settings(max_examples=60, deadline=None)


def cross_of(*layers: list[list[float]], heads: int = 1) -> torch.Tensor:
    """(L, H, T, S) weights from one (T, S) matrix per layer, the same in every head."""
    return torch.tensor(layers, dtype=torch.float32)[:, None].expand(-1, heads, -1, -1)


def one_hot_rows(columns: list[int], width: int) -> list[list[float]]:
    """Rows that put all their weight on one column each."""
    return [[1.0 if c == column else 0.0 for c in range(width)] for column in columns]


def check_pharaoh(pairs: list[tuple[int, int]], source_words: int, target_words: int) -> None:
    """Every target word exactly once, in order; every index in range; the printed format."""
    assert [t for _, t in pairs] == list(range(target_words))
    assert all(0 <= s < source_words for s, _ in pairs)
    printed = format_alignment(pairs)
    assert PHARAOH.match(printed) if pairs else printed == ""


# ---------------------------------------------------------------------------------------------
# Pieces to words


@pytest.mark.parametrize("pieces, expected", [
    (["▁A", "▁man", "▁ride", "s"], [0, 1, 2, 2]),
    (["A", "▁man"], [0, 1]),  # the first piece begins word 0 without "▁"
    (["ride", "s", "▁on"], [0, 0, 1]),
    (["▁", "Ö", "l", "▁ist"], [0, 0, 0, 1]),  # a lone "▁" begins the word of the piece after it
    (["▁A", "▁", "Ö", "▁b"], [0, 1, 1, 2]),
    (["▁", "▁x"], [0, 0]),  # two marks of whitespace before one word
    (["▁A", "▁"], [0, 0]),  # trailing whitespace joins the last word: decoding drops it
    (["▁"], [0]),
    (["a", "<unk>", "b"], [0, 0, 0]),  # <unk> is an ordinary piece
    (["ab▁", "c"], [0, 1]),  # whitespace at the end of a piece ends its word too
    ([], []),
])
def test_word_ids(pieces: list[str], expected: list[int]) -> None:
    assert word_ids(pieces) == expected


def test_piece_words_spell_the_words() -> None:
    assert piece_words(["▁A", "▁man", "▁ride", "s"]) == ["A", "man", "rides"]
    assert piece_words(["▁", "Ö", "l"]) == ["Öl"]
    assert piece_words(["▁", "▁"]) == []  # whitespace only: no word at all


@pytest.mark.parametrize("control", ["</s>", "<s>", "<pad>"])
def test_control_pieces_are_refused(control: str) -> None:
    with pytest.raises(ValueError, match="control piece"):
        word_ids(["▁A", control])


@EXAMPLES
@given(st.lists(st.sampled_from(["▁", "▁a", "▁bc", "d", "ef", "g▁"]), max_size=12))
def test_piece_words_equal_the_decoded_texts_split(pieces: list[str]) -> None:
    # SentencePiece decodes by joining the pieces and turning "▁" into a space
    decoded = "".join(pieces).replace("▁", " ")
    assert piece_words(pieces) == decoded.split()


# ---------------------------------------------------------------------------------------------
# The rule on hand-made weights

SOURCE3 = ["▁a", "▁b", "▁c"]
TARGET3 = ["▁x", "▁y", "▁z"]


def test_a_permutation_of_pieces_gives_that_permutation() -> None:
    # rows: target x, y, z, </s>; columns: source a, b, c, </s>
    cross = cross_of(one_hot_rows([2, 0, 1, 3], 4))
    pairs = word_alignment(cross, SOURCE3, TARGET3)
    assert pairs == [(2, 0), (0, 1), (1, 2)]
    assert format_alignment(pairs) == "2-0 0-1 1-2"


def test_the_pieces_of_a_word_are_pooled() -> None:
    source, target = ["▁lang", "er", "▁word"], ["▁x", "▁y", "y"]  # 2 source words, 2 target words
    cross = cross_of([
        # lang   er  word  </s>
        [0.00, 0.00, 0.90, 0.10],  # x
        [0.10, 0.10, 0.60, 0.20],  # y:  alone it would pick 'word' (0.6 against 0.2)
        [0.40, 0.40, 0.10, 0.10],  # y   but with this row 'langer' gets 1.0 against 0.7
        [1.00, 0.00, 0.00, 0.00],  # </s>
    ])
    assert word_alignment(cross, source, target) == [(1, 0), (0, 1)]
    # a word's columns are summed: 'langer' (0.35 + 0.35) beats the largest single piece (0.3)
    cross = cross_of([[0.35, 0.35, 0.30, 0.00], [0.35, 0.35, 0.30, 0.00],
                      [0.35, 0.35, 0.30, 0.00], [0.00, 0.00, 0.00, 1.00]])
    assert word_alignment(cross, source, target) == [(0, 0), (0, 1)]


def test_the_eos_row_and_column_are_ignored_though_heaviest() -> None:
    cross = cross_of([
        [0.20, 0.00, 0.05, 0.75],  # x: most weight on </s>, then on a
        [0.00, 0.05, 0.20, 0.75],  # y: then c
        [0.00, 0.20, 0.05, 0.75],  # z: then b
        [0.00, 0.00, 0.00, 1.00],  # </s>
    ])
    assert word_alignment(cross, SOURCE3, TARGET3) == [(0, 0), (2, 1), (1, 2)]
    # Rows are taken by position: the </s> row is the last and aligns nothing, even when it
    # points elsewhere than every other row.
    cross = cross_of([[0.0, 0.0, 1.0, 0.0]] * 3 + [[1.0, 0.0, 0.0, 0.0]])
    assert word_alignment(cross, SOURCE3, TARGET3) == [(2, 0), (2, 1), (2, 2)]


def test_heads_are_averaged() -> None:
    #          a     b     c   </s>
    head_0 = [[0.50, 0.40, 0.00, 0.10],  # x: a, narrowly
              [0.00, 0.00, 0.90, 0.10],  # y
              [0.00, 0.90, 0.00, 0.10],  # z
              [0.00, 0.00, 0.00, 1.00]]
    head_1 = [[0.00, 0.45, 0.00, 0.55]] + head_0[1:]  # x: b
    cross = torch.tensor([[head_0, head_1]])  # (1, 2, 4, 4)
    # the mean gives b 0.425 against a 0.25 (the strongest single head, 0.5, would say a)
    assert word_alignment(cross, SOURCE3, TARGET3) == [(1, 0), (2, 1), (1, 2)]
    assert word_alignment(cross[:, :1], SOURCE3, TARGET3) == [(0, 0), (2, 1), (1, 2)]


def test_the_chosen_layer_is_used() -> None:
    cross = cross_of(one_hot_rows([0, 1, 2, 3], 4), one_hot_rows([1, 2, 0, 3], 4),
                     one_hot_rows([2, 0, 1, 3], 4))
    by_layer = {0: [(0, 0), (1, 1), (2, 2)], 1: [(1, 0), (2, 1), (0, 2)],
                2: [(2, 0), (0, 1), (1, 2)]}
    for layer, expected in by_layer.items():
        assert word_alignment(cross, SOURCE3, TARGET3, layer=layer) == expected
        assert word_alignment(cross, SOURCE3, TARGET3, layer=layer - 3) == expected
    assert word_alignment(cross, SOURCE3, TARGET3) == by_layer[1]  # the penultimate


def test_default_layer_is_the_penultimate_or_the_only_one() -> None:
    assert ALIGNMENT_LAYER_DEFAULT == -2
    assert [alignment_layer(n) for n in (1, 2, 3, 6)] == [0, 0, 1, 4]
    assert alignment_layer(6, -1) == 5 and alignment_layer(6, 0) == 0
    with pytest.raises(UserError, match="out of range"):
        alignment_layer(3, 3)
    with pytest.raises(UserError, match="out of range"):
        alignment_layer(3, -4)


def test_empty_source_or_target_aligns_nothing() -> None:
    assert word_alignment(torch.ones(2, 2, 1, 4) / 4, SOURCE3, []) == []
    assert word_alignment(torch.ones(2, 2, 4, 1), [], TARGET3) == []
    assert word_alignment(torch.ones(2, 2, 2, 4) / 4, SOURCE3, ["▁"]) == []  # no word in it
    assert format_alignment([]) == ""


def test_pieces_that_do_not_fit_the_weights_are_refused() -> None:
    cross = cross_of(one_hot_rows([0, 1, 2, 3], 4))
    with pytest.raises(ValueError, match="expected"):
        word_alignment(cross, SOURCE3 + ["</s>"], TARGET3)  # </s> left on the pieces
    with pytest.raises(ValueError, match="expected"):
        word_alignment(cross[0], SOURCE3, TARGET3)  # no layer axis


@st.composite
def attention_cases(draw) -> tuple[torch.Tensor, list[str], list[str]]:
    pieces = st.lists(st.sampled_from(["▁", "▁a", "▁bc", "d", "ef"]), max_size=8)
    source, target = draw(pieces), draw(pieces)
    layers, heads = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**16))
    scores = torch.randn(layers, heads, len(target) + 1, len(source) + 1,
                         generator=torch.Generator().manual_seed(seed))
    return scores.softmax(dim=-1), source, target


@EXAMPLES
@given(attention_cases())
def test_every_target_word_is_aligned_once_within_range(case) -> None:
    cross, source, target = case
    pairs = word_alignment(cross, source, target)
    source_words, target_words = len(piece_words(source)), len(piece_words(target))
    check_pharaoh(pairs, source_words, target_words if source_words else 0)


# ---------------------------------------------------------------------------------------------
# Indices onto the words of the texts


def test_align_words_to_text() -> None:
    # SentencePiece decodes an unknown piece as " ⁇ ": one piece word becomes three text words
    assert align_words_to_text(["the", "m<unk>an", "is"], "the m ⁇ an is") == \
        [[0], [1], [1], [1], [2]]
    # NFKC, SentencePiece's normalisation, turns the ligature into "fi": still the same word
    assert align_words_to_text(["ein", "fish"], "ein  ﬁsh") == [[0], [1]]
    # a text word the pieces lack takes the piece word before it (the first, at the start)
    assert align_words_to_text(["a", "b"], "a \u200b b") == [[0], [0], [1]]
    assert align_words_to_text(["b"], "\u200b b") == [[0], [0]]
    # a piece word the text lacks joins the text word before it
    assert align_words_to_text(["a", "x", "b"], "a b") == [[0, 1], [2]]
    assert align_words_to_text([], "a b") == [[], []]
    assert align_words_to_text(["a"], "  ") == []


def test_texts_map_the_indices_onto_their_words() -> None:
    source = ["▁the", "▁m", "<unk>", "an", "▁is"]  # 3 piece words, 5 text words
    target = ["▁der", "▁M", "ann", "▁ist"]  # 3 piece words
    cross = cross_of(one_hot_rows([4, 1, 2, 0, 5], 6))
    assert word_alignment(cross, source, target) == [(2, 0), (1, 1), (0, 2)]
    pairs = word_alignment(cross, source, target, source_text="the m ⁇ an is",
                           target_text="der Mann ist")
    assert pairs == [(4, 0), (1, 1), (0, 2)]  # 'm ⁇ an' collects the attention: its first word
    # an extra target word (an unknown piece's " ⁇ ") shares the alignment of its piece word
    pairs = word_alignment(cross, source, target, target_text="der M ⁇ ann ist")
    assert pairs == [(2, 0), (1, 1), (1, 2), (1, 3), (0, 4)]


@EXAMPLES
@given(attention_cases(), st.lists(st.sampled_from(["a", "bc", "def", "⁇", "\u200b"]), max_size=8),
       st.lists(st.sampled_from(["a", "bc", "def", "⁇"]), max_size=8))
def test_with_texts_indices_stay_within_their_words(case, source_words, target_words) -> None:
    cross, source, target = case
    source_text, target_text = " ".join(source_words), "  ".join(target_words)
    pairs = word_alignment(cross, source, target, source_text=source_text, target_text=target_text)
    if piece_words(source) and piece_words(target) and source_text.split():
        check_pharaoh(pairs, len(source_text.split()), len(target_text.split()))
    else:
        assert pairs == []


# ---------------------------------------------------------------------------------------------
# A model whose cross-attention is known: the alignment read from the real forward pass

D_MODEL, HEAD_DIM = 32, 16  # toy_model: 2 heads of 16
EMBED = 10.0  # a token's embedding: EMBED times a one-hot (before the model's sqrt(D) scaling)
SHARPNESS = 2.0  # W_q and W_k scale: a matching query and key score about 31 * 2 * 2 / 4 = 31
# Pieces and ids (4.. are words in helpers_model): source words w4 | w5 w6 | w7 w8,
# target words w9 w10 | w11 | w12.
SOURCE_IDS, SOURCE_PIECES = [4, 5, 6, 7, 8], ["▁w4", "▁w5", "w6", "▁w7", "w8"]
TARGET_IDS, TARGET_PIECES = [9, 10, 11, 12], ["▁w9", "w10", "▁w11", "▁w12"]
# Per decoder layer: the source id that each decoder input looks up. Step i reads BOS, then
# target[i-1]; the input 12 belongs to the </s> row, which the alignment drops.
LOOKUPS = [
    {BOS_ID: 5, 9: 5, 10: 7, 11: 4, 12: 8},  # layer 0
    {BOS_ID: 7, 9: 8, 10: 4, 11: 6, 12: 5},  # layer 1, the penultimate
    {BOS_ID: 4, 9: 4, 10: 8, 11: 5, 12: 7},  # layer 2, the top
]
# Target word 0 is made by steps 0 and 1, word 1 by step 2, word 2 by step 3; in layer 1 they
# look up 7 and 8 (source word 2), 4 (word 0), 6 (word 1).
EXPECTED = [[(1, 0), (2, 1), (0, 2)], [(2, 0), (0, 1), (1, 2)], [(0, 0), (2, 1), (1, 2)]]


def key_dim(source_id: int) -> int:
    """Head 0's query/key dimension that stands for a source word id (4..19 -> 0..15)."""
    return source_id - 4


def lookup_model() -> Transformer:
    """A 3-decoder-layer toy Transformer set by hand so that head 0 of each layer's
    cross-attention goes from each decoder input to the source position given by LOOKUPS.

    Every linear map is zeroed, except the cross-attention queries and keys. Each sub-layer then
    adds nothing to the residual stream (pre-norm: x + f(LN(x)) with f = 0), so every layer sees
    LN(EMBED * sqrt(D) * one_hot(id) + position): the one-hot dwarfs the sinusoids (at most 1),
    so after the LayerNorm the state is close to sqrt(D - 1) at its id's dimension and -0.2
    elsewhere. W_k copies a source id's dimension into its key dimension, W_q copies an input
    id's dimension into the key dimension of the source id it looks up: the matching key scores
    ~31, the others ~0, and the softmax puts over 0.999 on the match. Head 1 has no queries, so
    it attends uniformly: the head mean is half the lookup, half flat.
    """
    model = toy_model(n_decoder_layers=3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
        for token in range(1, model.cfg.src_vocab_size):  # PAD stays zero
            model.embedding.weight[token, token] = EMBED
        for layer, lookup in zip(model.decoder_layers, LOOKUPS):
            w_q, w_k = layer.cross_attn.q_proj.weight, layer.cross_attn.kv_proj.weight[:D_MODEL]
            for source_id in range(4, 4 + HEAD_DIM):
                w_k[key_dim(source_id), source_id] = SHARPNESS
            for input_id, source_id in lookup.items():
                w_q[key_dim(source_id), input_id] = SHARPNESS
    return model


def recorded_cross(model: Transformer) -> torch.Tensor:
    """Teacher-force the pair through the model's own code, recording: (L, H, T, S)."""
    weights = AttentionWeights()
    forced_log_probs(model, source_batch([SOURCE_IDS]), [np.array(TARGET_IDS)], weights)
    return torch.stack(weights.cross, dim=1)[0]  # (B, L, H, T, S) -> one sentence


def test_a_hand_built_model_gives_its_known_alignment() -> None:
    cross = recorded_cross(lookup_model())
    assert cross.shape == (3, 2, len(TARGET_IDS) + 1, len(SOURCE_IDS) + 1)
    # the construction does what it says: head 0 looks up, head 1 is flat
    inputs = [BOS_ID] + TARGET_IDS
    for layer, lookup in enumerate(LOOKUPS):
        for step, input_id in enumerate(inputs):
            assert cross[layer, 0, step, SOURCE_IDS.index(lookup[input_id])] > 0.999
    assert torch.allclose(cross[:, 1], torch.full_like(cross[:, 1], 1 / (len(SOURCE_IDS) + 1)))
    assert word_alignment(cross, SOURCE_PIECES, TARGET_PIECES) == EXPECTED[1]  # the default
    for layer, expected in enumerate(EXPECTED):
        assert word_alignment(cross, SOURCE_PIECES, TARGET_PIECES, layer=layer) == expected
    assert format_alignment(EXPECTED[1]) == "2-0 0-1 1-2"
