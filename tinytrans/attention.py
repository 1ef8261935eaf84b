"""What the model attends to while it translates one sentence: recorded, selected, drawn.

The weights come from the model code that translates (model.py's `weights_out` path), recorded
along the chosen hypothesis: the sentence is translated, then the model runs once more, teacher-
forced on BOS + the hypothesis. Each decoder position then sees exactly the inputs it saw during
search when it chose its piece (the causal mask stands in for the step-by-step cache), so these
are the weights that produced that translation, not those of some other candidate.

Three kinds, each a (layers, heads, rows, columns) tensor with padding removed; every row sums to 1:
    encoder  rows and columns: the source pieces, then </s>
    decoder  rows: the target pieces, then </s> (row i is the step that produced target[i]);
             columns: that step's inputs, <s> and the pieces before it (the future gets 0)
    cross    rows: as for decoder; columns: the source pieces, then </s>

Choosing what to show: `layer` is an index (negative counts from the top) or "all"; `head` an
index, "mean", or "all". In one picture "all" layers and "mean" heads are averages (rows still
sum to 1). head="all" draws a grid instead, PNG only: one panel per layer (the chosen one, or
every layer when layer="all") and head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.text import Text

from tinytrans.atomic import atomic_write
from tinytrans.data import pad_sentences
from tinytrans.config import ATTENTION_KINDS
from tinytrans.errors import UserError
from tinytrans.hardware import autocast
from tinytrans.model import AttentionWeights, Transformer
from tinytrans.config import SearchConfig
from tinytrans.tokenizer import BOS_ID, EOS_ID, Tokenizer
from tinytrans.translate import Translator, Warn, forced_log_probs

KINDS = ATTENTION_KINDS


@dataclass(frozen=True)
class SentenceAttention:
    """One sentence, its translation, and the attention weights that produced it."""

    source: list[str]  # source pieces, then </s>: the encoder's positions
    target: list[str]  # the pieces the decoder produced, then </s>: one per decoder step
    target_inputs: list[str]  # what each decoder step read: <s>, then target[:-1]
    translation: str
    encoder: torch.Tensor  # (L, H, S, S)
    decoder: torch.Tensor  # (L, H, T, T), T = len(target)
    cross: torch.Tensor  # (L, H, T, S), S = len(source)

    def weights(self, kind: str) -> torch.Tensor:
        if kind not in KINDS:
            raise UserError(f"--kind: '{kind}' is not one of {', '.join(KINDS)}")
        return getattr(self, kind)

    def labels(self, kind: str) -> tuple[list[str], list[str]]:
        """(row labels, column labels) of the matrices of one kind."""
        self.weights(kind)  # checks the kind
        if kind == "encoder":
            return self.source, self.source
        return self.target, self.target_inputs if kind == "decoder" else self.source

    def to_json(self) -> dict[str, Any]:
        """Pieces and weights as plain lists: weights[kind][layer][head][row][column]."""
        return {
            "source": self.source, "target": self.target, "target_inputs": self.target_inputs,
            "translation": self.translation,
            "weights": {kind: self.weights(kind).round(decimals=6).tolist() for kind in KINDS},
        }


# ---------------------------------------------------------------------------------------------
# Recording


def sentence_attention(translator: Translator, source: str, cfg: SearchConfig,
                       warn: Warn | None = None, prefix: str = "",
                       tag: tuple[int, ...] = ()) -> SentenceAttention:
    """Translate `source` with `cfg` (beginning with `prefix`, when given) and record the
    attention along the best hypothesis. `tag`: a multilingual model's target tag
    (LineTranslator.tags), which then shows as the first source piece."""
    ids = translator.source_ids([source], warn=warn)[0]
    if len(ids) == 0:
        raise UserError("attention: the sentence is empty, there is nothing to attend to")
    ids = np.concatenate([np.asarray(tag, dtype=np.int64), ids]) if tag else ids
    start = translator.prefix_ids(prefix, 1, warn or (lambda message: None)) if prefix else ()
    best = translator.translate_batch([ids], cfg, prefixes=[start])[0][0]
    with autocast(translator.device, translator.precision):
        return record_attention(translator.model, translator.src_tok, translator.tgt_tok, [ids],
                                [best.tokens], translator.device)[0]


def record_attention(model: Transformer, src_tok: Tokenizer, tgt_tok: Tokenizer,
                     sources: list[np.ndarray], targets: list[list[int]],
                     device: torch.device = torch.device("cpu")) -> list[SentenceAttention]:
    """Teacher-force a batch of (source ids, target ids), both without BOS/EOS, recording every
    attention weight; each sentence's matrices are then cut to its own length."""
    src = pad_sentences(sources, [], [EOS_ID]).to(device)
    recorded = AttentionWeights()
    forced_log_probs(model, src, [np.asarray(t, dtype=np.int64) for t in targets], recorded)
    stacked = {kind: torch.stack(getattr(recorded, kind), dim=1).float().cpu()  # (B, L, H, r, c)
               for kind in KINDS}
    bos, eos = tgt_tok.sp.id_to_piece(BOS_ID), tgt_tok.sp.id_to_piece(EOS_ID)
    results = []
    for b, (src_ids, tgt_ids) in enumerate(zip(sources, targets)):
        S, T = len(src_ids) + 1, len(tgt_ids) + 1  # with EOS; the rest is padding
        target = tgt_tok.sp.id_to_piece(list(map(int, tgt_ids)))
        results.append(SentenceAttention(
            source=src_tok.sp.id_to_piece(list(map(int, src_ids))) + [eos],
            target=target + [eos],
            target_inputs=[bos] + target,
            translation=tgt_tok.decode([list(map(int, tgt_ids))])[0],
            encoder=stacked["encoder"][b, :, :, :S, :S],
            decoder=stacked["decoder"][b, :, :, :T, :T],
            cross=stacked["cross"][b, :, :, :T, :S],
        ))
    return results


# ---------------------------------------------------------------------------------------------
# Choosing layers and heads


def select(attention: SentenceAttention, kind: str = "cross", layer: int | str = "all",
           head: int | str = "mean") -> torch.Tensor:
    """One (rows, columns) matrix: a layer or the mean of all, a head or the mean of all."""
    weights = attention.weights(kind)  # (L, H, R, C)
    if head == "all":
        raise UserError("--head all draws a grid of layers x heads: only in a PNG")
    L, H = weights.shape[:2]
    by_layer = weights.mean(dim=0) if layer == "all" else weights[parse_index(layer, L, "--layer")]
    return by_layer.mean(dim=0) if head == "mean" else by_layer[parse_index(head, H, "--head")]


def parse_index(value: int | str, count: int, flag: str) -> int:
    """An index among `count` layers or heads, as an int or its text; negative from the top."""
    words = "'all'" if flag == "--layer" else "'mean' or 'all'"
    try:
        index = int(value)
    except ValueError:
        raise UserError(f"{flag}: '{value}' is neither a number nor {words}") from None
    if not -count <= index < count:
        raise UserError(f"{flag}: {index} is out of range: the model has {count} "
                        f"({-count} to {count - 1}, or {words})")
    return index % count


def describe(attention: SentenceAttention, kind: str, layer: int | str, head: int | str) -> str:
    """A title such as 'cross attention, layer 1, mean of 4 heads'."""
    L, H = attention.weights(kind).shape[:2]
    return f"{kind} attention, {_one_or_mean(layer, 'all', L, 'layer')}, " \
           f"{_one_or_mean(head, 'mean', H, 'head')}"


def _one_or_mean(value: int | str, mean_word: str, count: int, name: str) -> str:
    if value == mean_word:
        return f"mean of {count} {name}s" if count > 1 else f"{name} 0"
    return f"{name} {parse_index(value, count, '--' + name)}"


# ---------------------------------------------------------------------------------------------
# A heatmap in text

SHADES = " ░▒▓█"
SHADE_FROM = (0.05, 0.15, 0.3, 0.5)  # a weight >= SHADE_FROM[i] is drawn with SHADES[i + 1]
CELL = 2  # characters per cell, so that cells look roughly square in a terminal
LABEL_MAX = 12  # row labels (target pieces) longer than this are cut
HEADER_MAX = 8  # column labels are written downwards, at most this many characters


def render_heatmap(attention: SentenceAttention, kind: str = "cross", layer: int | str = "all",
                   head: int | str = "mean", width: int = 80) -> Text:
    """Rows (target pieces) x columns (source pieces) as shades, at most `width` characters wide.

    Column labels run downwards. Columns that do not fit are cut, with a note saying so.
    """
    matrix = select(attention, kind, layer, head)  # (R, C)
    rows, columns = attention.labels(kind)
    label_width = min(LABEL_MAX, max(len(r) for r in rows))
    fits = max(1, (width - label_width) // (CELL + 1))  # each cell is followed by one space
    shown = columns[:fits]
    text = Text(describe(attention, kind, layer, head) + "\n", style="bold")
    indent = " " * (label_width + 1)
    for line in vertical_labels(shown):
        text.append(indent + line + "\n")
    for label, row in zip(rows, matrix[:, :fits].tolist()):
        text.append(shorten(label, label_width).ljust(label_width) + " ", style="cyan")
        text.append(" ".join(shade(w) * CELL for w in row).rstrip() + "\n")
    legend = " ".join(f"{s} >={t:g}" for s, t in zip(SHADES[1:], SHADE_FROM))
    text.append(legend + "\n", style="dim")
    if len(columns) > fits:
        text.append(f"{len(columns) - fits} more columns cut to fit {width} characters; "
                    f"the JSON and the PNG have them all\n", style="yellow")
    return text


def shade(weight: float) -> str:
    return SHADES[sum(weight >= t for t in SHADE_FROM)]


def shorten(piece: str, limit: int) -> str:
    return piece if len(piece) <= limit else piece[: limit - 1] + "…"


def vertical_labels(labels: list[str]) -> list[str]:
    """Labels written top to bottom, one per cell column: line k holds their k-th characters."""
    cut = [shorten(label, HEADER_MAX) for label in labels]
    height = max(len(label) for label in cut)
    return [" ".join(label[k].ljust(CELL) if k < len(label) else " " * CELL
                     for label in cut).rstrip() for k in range(height)]


# ---------------------------------------------------------------------------------------------
# A picture (matplotlib, the 'plot' extra)

DPI = 100
CELL_PX = 30  # one weight
MARGIN_PX = {"left": 130, "bottom": 130, "top": 40, "right": 20}  # labels and title of a panel


def panels(attention: SentenceAttention, kind: str, layer: int | str,
           head: int | str) -> list[list[tuple[str, torch.Tensor]]]:
    """The grid of (title, matrix) panels to draw: one panel, or layers x heads for head='all'."""
    if head != "all":
        return [[(describe(attention, kind, layer, head), select(attention, kind, layer, head))]]
    weights = attention.weights(kind)  # (L, H, R, C)
    L, H = weights.shape[:2]
    layers = range(L) if layer == "all" else [parse_index(layer, L, "--layer")]
    return [[(f"{kind}, layer {i}, head {j}", weights[i, j]) for j in range(H)] for i in layers]


def png_size(attention: SentenceAttention, kind: str = "cross", layer: int | str = "all",
             head: int | str = "mean") -> tuple[int, int]:
    """(width, height) in pixels of the picture save_png draws."""
    grid = panels(attention, kind, layer, head)
    rows, columns = attention.labels(kind)
    panel_w = MARGIN_PX["left"] + CELL_PX * len(columns) + MARGIN_PX["right"]
    panel_h = MARGIN_PX["top"] + CELL_PX * len(rows) + MARGIN_PX["bottom"]
    return panel_w * len(grid[0]), panel_h * len(grid)


def save_png(attention: SentenceAttention, path: Path, kind: str = "cross",
             layer: int | str = "all", head: int | str = "mean") -> Path:
    """Draw the weights as a labelled heatmap (a grid of them for head='all') into a PNG file."""
    try:
        from matplotlib.figure import Figure  # the figure alone: no pyplot state, no GUI backend
    except ImportError:
        raise UserError("--png: needs matplotlib, which is not installed "
                        "(pip install 'tinytrans[plot]')") from None
    grid = panels(attention, kind, layer, head)
    rows, columns = attention.labels(kind)
    width, height = png_size(attention, kind, layer, head)
    panel_w, panel_h = width // len(grid[0]), height // len(grid)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for i, grid_row in enumerate(grid):
        for j, (title, matrix) in enumerate(grid_row):
            left = j * panel_w + MARGIN_PX["left"]
            bottom = (len(grid) - 1 - i) * panel_h + MARGIN_PX["bottom"]
            axes = figure.add_axes((left / width, bottom / height, CELL_PX * len(columns) / width,
                                    CELL_PX * len(rows) / height))
            axes.imshow(matrix.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
            axes.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
            axes.set_yticks(range(len(rows)), rows, fontsize=8)
            axes.set_title(title, fontsize=9)
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path
