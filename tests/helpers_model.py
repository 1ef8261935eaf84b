"""Toy models and sentences shared by the model, search and checkpoint tests.

Everything here is tiny (d_model 32, 2 heads, a vocabulary of 20) so that the property tests run
in milliseconds on a CPU. Ids 0-3 are PAD, UNK, BOS and EOS; "words" are ids 4..VOCAB-1.
"""

from __future__ import annotations

import functools

import torch

from tinytrans.config import ModelConfig
from tinytrans.loss import label_smoothed_nll
from tinytrans.model import Transformer
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID

VOCAB = 20
FIRST_WORD = 4  # ids below are PAD, UNK, BOS, EOS


def toy_config(**overrides) -> ModelConfig:
    values = {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB, "d_model": 32, "n_heads": 2,
              "d_ff": 64, "n_encoder_layers": 2, "n_decoder_layers": 2, "dropout": 0.0,
              "attention_dropout": 0.0, "activation_dropout": 0.0}
    values.update(overrides)
    return ModelConfig(**values)


def toy_model(seed: int = 0, **overrides) -> Transformer:
    """A freshly initialised toy Transformer in eval mode (no dropout anywhere)."""
    torch.manual_seed(seed)
    return Transformer(toy_config(**overrides)).eval()


def random_words(generator: torch.Generator, length: int, vocab: int = VOCAB) -> list[int]:
    return torch.randint(FIRST_WORD, vocab, (length,), generator=generator).tolist()


def pad_rows(rows: list[list[int]], width: int | None = None) -> torch.Tensor:
    """Rows of ids -> (B, L) right-padded with PAD_ID; L = the longest row, or `width`."""
    width = width or max(len(r) for r in rows)
    out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def source_batch(sentences: list[list[int]], width: int | None = None) -> torch.Tensor:
    """Word ids per sentence -> (B, S) source ids, each ending with EOS, right-padded."""
    return pad_rows([s + [EOS_ID] for s in sentences], width)


def random_sources(seed: int, lengths: list[int], vocab: int = VOCAB) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [random_words(generator, n, vocab) for n in lengths]


# A handful of fixed pairs: target = a deterministic function of the source (reversed, shifted),
# of different lengths, so that a model has to read the source to reproduce each target.
OVERFIT_SOURCES = [
    [4, 5, 6],
    [7, 8, 9, 10, 11],
    [12, 13],
    [14, 15, 16, 17],
    [18, 19, 4, 6, 8, 10],
    [5, 9, 13, 17, 6],
]
OVERFIT_TARGETS = [[FIRST_WORD + (w - FIRST_WORD + 3) % (VOCAB - FIRST_WORD) for w in reversed(s)]
                   for s in OVERFIT_SOURCES]
# Targets differ in length from their sources for two of the pairs.
OVERFIT_TARGETS[2] = OVERFIT_TARGETS[2] + [11, 11]
OVERFIT_TARGETS[4] = OVERFIT_TARGETS[4][:3]


def teacher_forcing_batch(targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets -> decoder input (BOS + y) and decoder output (y + EOS), both right-padded."""
    return pad_rows([[BOS_ID] + t for t in targets]), pad_rows([t + [EOS_ID] for t in targets])


def train_to_overfit(model: Transformer, sources: list[list[int]], targets: list[list[int]],
                     steps: int, lr: float = 3e-3) -> list[float]:
    """Full-batch Adam on the pairs with plain cross-entropy; returns the mean loss per step."""
    src = source_batch(sources)
    tgt_in, tgt_out = teacher_forcing_batch(targets)
    keep = tgt_out != PAD_ID
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        logits = model(src, tgt_in)  # (B, T, V)
        loss, _ = label_smoothed_nll(logits[keep], tgt_out[keep], epsilon=0.0)
        loss = loss / keep.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


@functools.lru_cache(maxsize=1)
def _overfit() -> tuple[Transformer, tuple[float, ...]]:
    torch.manual_seed(0)
    model = Transformer(toy_config(n_encoder_layers=1, n_decoder_layers=1))
    losses = train_to_overfit(model, OVERFIT_SOURCES, OVERFIT_TARGETS, steps=200)
    return model, tuple(losses)


def overfit_model() -> Transformer:
    """A toy model trained (once per test session) until it reproduces the OVERFIT pairs.

    Shared between tests: treat it as read-only.
    """
    return _overfit()[0]


def overfit_losses() -> tuple[float, ...]:
    return _overfit()[1]
