"""Training under hostile conditions: validation sets with empty lines, kills between a validation
and the next checkpoint, resumption with other intervals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import sacrebleu
import torch

from tinytrans.model import Transformer
from tinytrans.tokenizer import Tokenizer, train_tokenizer
from tinytrans.train import greedy_translations, learning_curves, load_validation_data, validate
from toyrun import toy_config, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus")
    return write_corpus(root / "train", 400), write_corpus(root / "valid", 30, "valid")


@pytest.fixture(scope="module")
def tokenizer(corpus) -> Tokenizer:
    train = corpus[0]
    return train_tokenizer([Path(f"{train}.en"), Path(f"{train}.de")], train.parent / "spm", 300)


# ---------------------------------------------------------------------------------------------
# Validation pairs and references stay aligned


def test_dropped_validation_pairs_take_their_references_with_them(corpus, tokenizer, tmp_path):
    src = Path(f"{corpus[1]}.en").read_text(encoding="utf-8").splitlines()[:8]
    tgt = Path(f"{corpus[1]}.de").read_text(encoding="utf-8").splitlines()[:8]
    src[1] = ""  # an empty line
    tgt[3] = " \t "  # only whitespace
    src[5] = "\u200b"  # not blank as text, but no pieces once normalised
    for lang, lines in (("en", src), ("de", tgt)):
        Path(f"{tmp_path}/valid.{lang}").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    kept = [i for i in range(8) if i not in (1, 3, 5)]
    events = []
    cfg = toy_config(corpus[0], tmp_path / "valid")
    valid = load_validation_data(cfg, tokenizer, tokenizer, events.append)

    assert valid.references == [tgt[i] for i in kept]
    assert len(valid.corpus) == len(kept)
    assert tokenizer.decode([valid.corpus.src[k].tolist() for k in range(len(kept))]) == [src[i] for i in kept]
    assert tokenizer.decode([valid.corpus.tgt[k].tolist() for k in range(len(kept))]) == valid.references
    assert events == [{"event": "valid_data", "read": 8, "kept": 5}]

    torch.manual_seed(0)
    model = Transformer(replace(cfg.model, src_vocab_size=300, tgt_vocab_size=300)).eval()
    cpu = torch.device("cpu")
    hyps = greedy_translations(model, valid.corpus, tokenizer, 600, cpu, "fp32")
    scores = validate(model, valid, tokenizer, cfg, cpu, "fp32")
    assert scores["bleu"] == sacrebleu.corpus_bleu(hyps, [[tgt[i] for i in kept]]).score


# ---------------------------------------------------------------------------------------------
# curves.png compares like with like


def test_learning_curves_plot_training_nll_against_validation_nll():
    records = [{"event": "log", "step": 1, "loss": 9.0, "nll": 7.0},
               {"event": "log", "step": 2, "loss": 8.5, "nll": 6.0},
               {"event": "valid", "step": 2, "loss": 5.5, "bleu": 3.0}]
    curves = learning_curves(records)
    assert curves["train_nll"] == ([1, 2], [7.0, 6.0])  # not the label-smoothed "loss"
    assert curves["valid_nll"] == ([2], [5.5])
    assert curves["valid_bleu"] == ([2], [3.0])
