"""Attention weights along the chosen translation: their properties, the selection, the pictures."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tinytrans.attention import (SentenceAttention, png_size, record_attention, render_heatmap,
                                 save_png, select, sentence_attention, shorten)
from tinytrans.checkpoint import BEST, CHECKPOINT_DIR, save_checkpoint
from tinytrans.config import build_config, to_toml
from tinytrans.data import pad_sentences
from tinytrans.errors import UserError
from tinytrans.model import AttentionWeights, Transformer
from tinytrans.rundir import CONFIG_FILE, tokenizer_files
from tinytrans.config import SearchConfig
from tinytrans.tokenizer import EOS_ID, Tokenizer
from tinytrans.translate import Translator, forced_log_probs

ATOL = 1e-5
LAYERS, HEADS = 2, 2
CFG = SearchConfig(beam=3, max_len_a=1.0, max_len_b=4)
SENTENCE = "The man buys a red car."
TWENTY_PIECES = "The young woman sees the dog and the children in the big garden."


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, small_tokenizer_prefix) -> Path:
    """A run directory holding a seeded, untrained toy model: as deterministic as it gets."""
    run = tmp_path_factory.mktemp("attention") / "run"
    tokenizer = Tokenizer.load(f"{small_tokenizer_prefix}.model")
    vocab = tokenizer.vocab_size
    cfg = build_config({
        "model": {"src_vocab_size": vocab, "tgt_vocab_size": vocab, "d_model": 32,
                  "n_heads": HEADS, "d_ff": 64, "n_encoder_layers": LAYERS,
                  "n_decoder_layers": LAYERS, "dropout": 0.0},
        "data": {"train": "unused", "vocab_size": vocab},
    }, "toy")
    (run / CHECKPOINT_DIR).mkdir(parents=True)
    (run / CONFIG_FILE).write_text(to_toml(cfg))
    tokenizer.save(tokenizer_files(run, joint=True)[0])
    torch.manual_seed(7)
    save_checkpoint(run / CHECKPOINT_DIR / BEST, Transformer(cfg.model), None, {})
    return run


@pytest.fixture(scope="module")
def translator(toy_run) -> Translator:
    return Translator(toy_run, precision="fp32")


@pytest.fixture(scope="module")
def result(translator) -> SentenceAttention:
    return sentence_attention(translator, SENTENCE, CFG)


def test_weights_follow_the_translation_that_search_chose(translator, result):
    assert result.translation == next(translator.translate([SENTENCE], CFG)).text
    assert result.source == translator.src_tok.encode_pieces([SENTENCE])[0] + ["</s>"]
    assert result.target[-1] == "</s>" and result.target_inputs == ["<s>"] + result.target[:-1]
    assert translator.tgt_tok.decode_pieces([result.target[:-1]])[0] == result.translation


def test_shapes_match_the_pieces_and_every_row_sums_to_one(result):
    S, T = len(result.source), len(result.target)
    assert result.encoder.shape == (LAYERS, HEADS, S, S)
    assert result.decoder.shape == (LAYERS, HEADS, T, T)
    assert result.cross.shape == (LAYERS, HEADS, T, S)
    for weights in (result.encoder, result.decoder, result.cross):
        assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=ATOL)
        assert (weights >= 0).all()


def test_decoder_self_attention_gives_the_future_nothing(result):
    T = len(result.target)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert (result.decoder[..., future] == 0).all()
    assert (result.decoder[..., ~future] > 0).all()


def test_padding_gets_nothing_and_batching_changes_nothing(translator, result):
    long_sentence = "Because a bear stayed, the bears are in the beautiful library with my friend."
    short, long = translator.source_ids([SENTENCE, long_sentence])
    assert len(long) > len(short) + 3
    targets = [[20, 21, 22], [10, 11, 12, 13, 14, 15, 16, 17]]  # any targets will do
    alone, = record_attention(translator.model, translator.src_tok, translator.tgt_tok, [short],
                              targets[:1])
    _, batched = record_attention(translator.model, translator.src_tok, translator.tgt_tok,
                                  [long, short], targets[::-1])
    for kind in ("encoder", "decoder", "cross"):
        assert torch.allclose(getattr(alone, kind), getattr(batched, kind), atol=ATOL), kind
    # the raw weights of the padded batch: the short sentence's padding columns are all 0
    raw = AttentionWeights()
    src = pad_sentences([long, short], [], [EOS_ID])
    forced_log_probs(translator.model, src, [np.asarray(t) for t in targets[::-1]], raw)
    S = len(short) + 1
    for layer in range(LAYERS):
        assert (raw.encoder[layer][1, :, :, S:] == 0).all()
        assert (raw.cross[layer][1, :, :, S:] == 0).all()
        assert (raw.cross[layer][0] > 0).all()  # the long sentence has no padding


def test_selection_of_layers_and_heads(result):
    assert torch.allclose(select(result, "cross", "all", "mean"), result.cross.mean(dim=(0, 1)))
    assert torch.equal(select(result, "encoder", 1, 0), result.encoder[1, 0])
    assert torch.equal(select(result, "decoder", "-1", "1"), result.decoder[LAYERS - 1, 1])
    one_layer = select(result, "cross", 0, "mean")
    assert torch.allclose(one_layer.sum(-1), torch.ones(len(result.target)))


@pytest.mark.parametrize("kind, layer, head, message", [
    ("cross", 2, "mean", "--layer: 2 is out of range"),
    ("cross", "all", -3, "--head: -3 is out of range"),
    ("cross", "mean", 0, "--layer: 'mean' is neither"),
    ("cross", "all", "all", "only in a PNG"),
    ("self", "all", "mean", "--kind: 'self'"),
])
def test_impossible_selections_are_one_line_errors(result, kind, layer, head, message):
    with pytest.raises(UserError, match=message):
        select(result, kind, layer, head)


def test_json_holds_the_pieces_and_the_matrices(result):
    data = json.loads(json.dumps(result.to_json()))
    assert data["source"] == result.source and data["target"] == result.target
    assert data["translation"] == result.translation
    for kind in ("encoder", "decoder", "cross"):
        matrix = torch.tensor(data["weights"][kind])
        assert matrix.shape == getattr(result, kind).shape
        assert torch.allclose(matrix, getattr(result, kind), atol=1e-6)


def test_an_empty_sentence_is_refused(translator):
    with pytest.raises(UserError, match="empty"):
        sentence_attention(translator, "   ", CFG)


# ---------------------------------------------------------------------------------------------
# The text heatmap


def synthetic(weights: list[list[float]]) -> SentenceAttention:
    """One layer, one head of given cross-attention weights over made-up pieces."""
    matrix = torch.tensor(weights)[None, None]  # (1, 1, T, S)
    T, S = matrix.shape[-2:]
    source = [f"▁s{i}" for i in range(S - 1)] + ["</s>"]
    target = [f"▁t{i}" for i in range(T - 1)] + ["</s>"]
    return SentenceAttention(source, target, ["<s>"] + target[:-1], "", torch.eye(S)[None, None],
                             torch.eye(T)[None, None], matrix)


def test_heatmap_shades_follow_the_weights():
    weights = [[1.0, 0.0, 0.0], [0.2, 0.4, 0.4], [0.0, 0.1, 0.9]]
    lines = render_heatmap(synthetic(weights), layer=0, head=0).plain.splitlines()
    assert lines[0] == "cross attention, layer 0, head 0"
    # column labels run downwards above their cells: "▁s0", "▁s1", "</s>"
    header = lines[1:5]
    assert [line[5::3] for line in header] == ["▁▁<", "ss/", "01s", "  >"]
    body = lines[5:8]
    assert body[0] == "▁t0  ██"
    assert body[1] == "▁t1  ▒▒ ▓▓ ▓▓"
    assert body[2] == "</s>    ░░ ██"
    assert "more columns cut" not in lines[-1]


def test_heatmap_is_stable_and_fits_80_columns(toy_run, translator):
    first = sentence_attention(translator, TWENTY_PIECES, CFG)
    again = sentence_attention(Translator(toy_run, precision="fp32"), TWENTY_PIECES, CFG)
    assert 18 <= len(first.source) <= 22  # the sentence this test is about
    text = render_heatmap(first).plain
    assert render_heatmap(again).plain == text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "more columns cut" not in text
    body = lines[-len(first.target) - 1: -1]  # the rows, then the legend
    assert [line.split(" ")[0] for line in body] == [shorten(p, 12) for p in first.target]
    label_width = min(12, max(len(p) for p in first.target))
    for line, row in zip(body, select(first).tolist()):  # the heaviest cell is the darkest
        cells = line[label_width + 1:].ljust(3 * len(row))[::3]
        assert cells[int(np.argmax(row))] == max(cells, key=" ░▒▓█".index)


def test_wide_heatmaps_are_cut_with_a_note(translator):
    wide = sentence_attention(translator, " ".join([TWENTY_PIECES] * 2), CFG)
    lines = render_heatmap(wide, "encoder", layer=0, head="mean").plain.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "more columns cut to fit 80 characters" in lines[-1]
    shown = len(wide.source) - int(lines[-1].split()[0])
    assert 20 <= shown < len(wide.source)
    assert len(lines[1].replace(" ", "")) == shown  # the first characters of the shown labels


# ---------------------------------------------------------------------------------------------
# The picture


def png_dimensions(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_of_one_panel_and_of_a_grid(result, tmp_path):
    pytest.importorskip("matplotlib", reason="the PNG needs the 'plot' extra")
    one = save_png(result, tmp_path / "one.png", "cross", layer="all", head="mean")
    width, height = png_dimensions(one)
    assert (width, height) == png_size(result, "cross", "all", "mean")
    assert width > 30 * len(result.source) and height > 30 * len(result.target)
    grid = save_png(result, tmp_path / "grid.png", "cross", layer="all", head="all")
    assert png_dimensions(grid) == (HEADS * width, LAYERS * height)
    # decoder self-attention: T columns instead of S; one layer, every head
    row = save_png(result, tmp_path / "row.png", "decoder", layer=-1, head="all")
    extra_columns = len(result.target) - len(result.source)
    assert png_dimensions(row) == (HEADS * (width + 30 * extra_columns), height)


def test_png_without_matplotlib_is_a_clear_error(result, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    with pytest.raises(UserError, match=r"tinytrans\[plot\]"):
        save_png(result, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
