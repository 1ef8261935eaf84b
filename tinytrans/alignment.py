"""Word alignment from the decoder's cross-attention: which source word each output word came from.

`tinytrans translate --alignment` prints it after the translation in the Moses / fast_align
("Pharaoh") format: `srcIndex-tgtIndex` pairs of 0-based whitespace words, e.g. `0-0 1-2 2-1`.

The rule, from the weights of attention.py (`SentenceAttention.cross`, recorded along the chosen
hypothesis, row i = the step that produced target piece i):
    1. one layer, its heads averaged                           (L, H, T, S) -> (T, S)
    2. the </s> row and column dropped                        -> (T - 1, S - 1), pieces only
    3. rows summed within each target word, columns within each source word
                                                               -> (target words, source words)
    4. each target word aligned to its argmax source word: every target word exactly once.

Pieces become words by SentencePiece's convention (a "▁" marks the whitespace before a word).
When the texts are given, indices are mapped onto their whitespace words (`text.split()`), so
that they always point into the line the user typed and the translation printed, even where
SentencePiece's normalisation or its " ⁇ " for an unknown piece changed the number of words.

Shape legend: L decoder layers, H heads, T target pieces + 1 (</s>), S source pieces + 1 (</s>),
Wt / Ws target / source words. This module imports no other part of tinytrans but errors, so
that translate.py, the CLI and the API can all use it. Printing pairs as `0-0 1-2` is text, and
lives with the other line handling (lines.format_alignment).
"""

from __future__ import annotations

import difflib
import unicodedata

import torch

from tinytrans.errors import UserError

# Garg et al. (2019, "Jointly Learning to Align and Translate with Transformer Models")
# compared the layers of a vanilla 6-layer Transformer: the head average of the penultimate
# decoder layer's cross-attention gave the lowest alignment error rate. fairseq's
# --print-alignment averages the last layer's heads instead; layer=-1 gives that. Negative
# indices count from the top; a model with a single decoder layer uses that layer.
ALIGNMENT_LAYER_DEFAULT = -2
# Placing glossary terms (terminology.place_terms) reads the mean of the two layers below the
# top: on Multi30k's validation set with a 4-layer decoder, the source word translated twice
# after placing went from 6.3% (layer -2 alone) to 4.5% (bench/terminology.py, RESULTS.md)
PLACEMENT_LAYERS = (-3, -2)

SPACE = "\u2581"  # "▁", SentencePiece's visible mark for the whitespace before a word
# The names SentencePiece gives to the reserved pad, BOS and EOS ids (tokenizer.py keeps them).
# They are not text: the caller strips them (the </s> row and column are dropped by position).
CONTROL_PIECES = frozenset({"<pad>", "<s>", "</s>"})


# ---------------------------------------------------------------------------------------------
# Pieces to words


def word_ids(pieces: list[str]) -> list[int]:
    """The 0-based whitespace word of each piece, e.g. ▁A ▁man ▁ride s -> [0, 1, 2, 2].

    A piece with text begins a new word when whitespace comes before its text: a leading "▁",
    a previous piece ending with "▁", or the start of the sentence (so the first piece is word
    0 with or without "▁"). A piece of whitespace only (a lone "▁", which SentencePiece emits
    before characters it has no "▁x" piece for) belongs to the word that follows it, or to the
    last word when none follows (decoding drops that trailing space). "▁" inside a piece is not a
    boundary: tinytrans's tokenizers split at whitespace, so no piece holds two words (with a
    text given, align_words_to_text would still map such a piece onto the text's words).
    `<unk>` is an ordinary piece. Control pieces (<s>, </s>, <pad>) raise a ValueError.
    """
    ids: list[int] = []
    word, after_space, waiting = -1, True, 0  # waiting: whitespace pieces before the next word
    for piece in pieces:
        if piece in CONTROL_PIECES:
            raise ValueError(f"word_ids: control piece {piece!r} is not text; strip it first")
        if not piece.strip(SPACE):
            waiting += 1
            after_space = True
            continue
        if after_space or piece.startswith(SPACE):
            word += 1
        ids += [word] * (waiting + 1)
        waiting, after_space = 0, piece.endswith(SPACE)
    return ids + [max(word, 0)] * waiting


def piece_words(pieces: list[str]) -> list[str]:
    """The words the pieces spell, "▁" removed: ▁A ▁man ▁ride s -> [A, man, rides].

    [] when no piece holds text (there is no word to align).
    """
    ids = word_ids(pieces)
    words = [""] * (max(ids, default=-1) + 1)
    for word, piece in zip(ids, pieces):
        words[word] += piece.replace(SPACE, "")
    return words if any(words) else []


def align_words_to_text(words: list[str], text: str) -> list[list[int]]:
    """For each whitespace word of `text`, the indices of the piece `words` it stands for.

    Words equal after NFKC (SentencePiece's normalisation) are matched in order with difflib and
    map one to one. A run of unmatched words between two matches is stretched over the run on
    the other side: each text word gets the piece words whose share of the run overlaps its own
    ('m<unk>an' -> 'm', '⁇', 'an' all three). Text words with no piece word at all take the one
    before them (the first at the start); piece words with no text word join the text word
    before them. So every text word gets at least one piece word whenever `words` is non-empty.
    """
    text_words = text.split()
    if not words or not text_words:
        return [[] for _ in text_words]
    normalized = [unicodedata.normalize("NFKC", w) for w in text_words]
    # autojunk off: it would ignore frequent words ("the") in sentences of 200 words and more
    matcher = difflib.SequenceMatcher(None, words, normalized, autojunk=False)
    links: list[list[int]] = [[] for _ in text_words]
    for _, i1, i2, j1, j2 in matcher.get_opcodes():
        if i1 == i2:  # text words the pieces lack
            for j in range(j1, j2):
                links[j].append(max(i1 - 1, 0))
        elif j1 == j2:  # piece words the text lacks
            links[max(j1 - 1, 0)].extend(range(i1, i2))
        else:  # equal (n == m, so one to one) or replaced
            for j, linked in zip(range(j1, j2), stretch(i2 - i1, j2 - j1)):
                links[j].extend(i1 + i for i in linked)
    return [sorted(set(linked)) for linked in links]


def stretch(n: int, m: int) -> list[list[int]]:
    """n items and m items, each laid evenly over [0, 1): for each of the m, the n it overlaps.

    Item a of n covers [a/n, (a+1)/n) and item b of m covers [b/m, (b+1)/m); they overlap
    when a*m < (b+1)*n and b*n < (a+1)*m (multiplied out, so in integers). n == m: one to one.
    """
    return [[a for a in range(n) if a * m < (b + 1) * n and b * n < (a + 1) * m]
            for b in range(m)]


def word_groups(pieces: list[str], text: str | None = None) -> list[list[int]]:
    """The piece indices of each word: of each piece word, or of each whitespace word of `text`.

    [] when the pieces spell no word, whatever `text` holds: there is no attention to pool.
    """
    words, ids = piece_words(pieces), word_ids(pieces)
    groups = [[p for p, word in enumerate(ids) if word == w] for w in range(len(words))]
    if text is None or not groups:
        return groups
    return [sorted(p for w in linked for p in groups[w])
            for linked in align_words_to_text(words, text)]


# ---------------------------------------------------------------------------------------------
# Attention to alignment


def alignment_layer(n_layers: int, layer: int | None = None) -> int:
    """The index (0 .. n_layers-1) of the layer to align with; None: ALIGNMENT_LAYER_DEFAULT."""
    if layer is None:
        return ALIGNMENT_LAYER_DEFAULT % n_layers if n_layers >= 2 else 0
    if not -n_layers <= layer < n_layers:
        raise UserError(f"alignment layer {layer} is out of range: the model has {n_layers} "
                        f"decoder layers ({-n_layers} to {n_layers - 1})")
    return layer % n_layers


def word_alignment(cross: torch.Tensor, source_pieces: list[str], target_pieces: list[str],
                   layer: int | tuple[int, ...] | None = None, source_text: str | None = None,
                   target_text: str | None = None) -> list[tuple[int, int]]:
    """(source word, target word) pairs, one per target word, in target order.

    cross: (L, H, T, S) as in SentenceAttention, for pieces given WITHOUT their </s> (so T =
    len(target_pieces) + 1, S = len(source_pieces) + 1). `layer`: an index, negative from the
    top, or several (their mean); None: ALIGNMENT_LAYER_DEFAULT. With `source_text` / `target_text`, the indices are those
    of their whitespace words (see align_words_to_text); else of the words the pieces spell.
    An empty source or target gives [].
    """
    words = word_attention(cross, source_pieces, target_pieces, layer, source_text, target_text)
    # argmax returns the first of equal maxima: ties go to the leftmost source word
    return [(int(s), t) for t, s in enumerate(words.argmax(dim=1).tolist())] if words.numel() else []


def links_both_ways(cross: torch.Tensor, source_pieces: list[str], target_pieces: list[str],
                    layer: int | tuple[int, ...] | None = None, source_text: str | None = None,
                    target_text: str | None = None) -> tuple[list[tuple[int, int]],
                                                           list[tuple[int, int]]]:
    """word_alignment's pairs (one per target word), and the other direction from the same
    attention: one per source word, its target word the one that attended to it most (per
    piece: a word of many pieces is not favoured). The second names the word that translates a
    source word, where the first may link the article too ("Eine Frau" <- "woman"), or nothing.
    Arguments as word_alignment's; ([], []) for an empty side."""
    words = word_attention(cross, source_pieces, target_pieces, layer, source_text, target_text)
    if not words.numel():
        return [], []
    return ([(int(s), t) for t, s in enumerate(words.argmax(dim=1).tolist())],
            [(s, int(t)) for s, t in enumerate(words.argmax(dim=0).tolist())])


def word_attention(cross: torch.Tensor, source_pieces: list[str], target_pieces: list[str],
                   layer: int | tuple[int, ...] | None = None, source_text: str | None = None,
                   target_text: str | None = None) -> torch.Tensor:
    """The attention between words, (target words, source words): rule steps 1-3 of the module
    docstring. Empty (0 x 0) when either side has no word."""
    check_shape(cross, len(source_pieces), len(target_pieces))
    target_groups = word_groups(target_pieces, target_text)
    source_groups = word_groups(source_pieces, source_text)
    if not target_groups or not source_groups:
        return torch.zeros(0, 0)
    n = cross.size(0)
    # several layers name those a model of n layers has (-3 of a 2-layer model is its first)
    layers = sorted({max(-n, min(k, n - 1)) % n for k in layer}) if isinstance(layer, tuple) \
        else [alignment_layer(n, layer)]
    pieces = piece_attention(cross, layers)  # (T - 1, S - 1)
    # A row is a distribution over source pieces; summing a word's columns gives the attention
    # that word received as a whole, however many pieces SentencePiece cut it into. A target
    # word's rows are averaged: each of its pieces' steps weighs equally, and a long word does
    # not outweigh a short one when a source word's column is searched for its translation.
    rows = membership(target_groups, pieces.size(0))  # (Wt, T - 1)
    rows = rows / rows.sum(dim=1, keepdim=True)  # a mean over the word's pieces
    return rows @ pieces @ membership(source_groups, pieces.size(1)).T  # (Wt, Ws)


def check_shape(cross: torch.Tensor, source_length: int, target_length: int) -> None:
    expected = (target_length + 1, source_length + 1)
    if cross.dim() != 4 or tuple(cross.shape[2:]) != expected:
        raise ValueError(f"word_alignment: cross-attention of shape {tuple(cross.shape)}, expected "
                         f"(layers, heads, {expected[0]}, {expected[1]}): the pieces without </s>, "
                         f"the weights with its row and column")


def piece_attention(cross: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """The head mean of the given layers (their mean), without the </s> row and column:
    (L, H, T, S) -> (T-1, S-1).

    The </s> row is the step that ended the sentence, not a word of it. The </s> column is
    dropped because heads often park their weight on the closing token when there is nothing to
    look at (Clark et al., 2019, "What Does BERT Look At?", found this for [SEP]); it is no word.
    """
    return cross[layers].float().mean(dim=(0, 1))[:-1, :-1]


def membership(groups: list[list[int]], n_pieces: int) -> torch.Tensor:
    """(words, pieces): 1 where a piece belongs to a word. A piece may belong to several words."""
    matrix = torch.zeros(len(groups), n_pieces)
    for word, pieces in enumerate(groups):
        matrix[word, pieces] = 1.0
    return matrix
