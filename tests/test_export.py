"""CTranslate2 export: the engine computes what tinytrans computes and finds the same 1-best."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sacrebleu.metrics import BLEU

from tinytrans.checkpoint import BEST, CHECKPOINT_DIR, save_checkpoint
from tinytrans.config import build_config, to_toml
from tinytrans.errors import UserError
from tinytrans.export import export_ctranslate2, export_model
from tinytrans.model import Transformer
from tinytrans.rundir import CONFIG_FILE, tokenizer_files
from tinytrans.config import SearchConfig
from tinytrans.tokenizer import Tokenizer
from tinytrans.translate import Translator
from toyrun import BUNDLED

TEST_LINES = 300  # of the bundled test set: enough to measure agreement, fast to translate


@pytest.fixture(scope="module")
def ctranslate2():
    return pytest.importorskip("ctranslate2",
                               reason="ctranslate2 is not installed (the export extra)")


def handmade_run(root: Path, tokenizer: Tokenizer, seed: int, **model) -> Path:
    """A run directory holding an untrained toy model: enough to compare two implementations."""
    vocab = tokenizer.vocab_size
    joint = model.pop("joint_vocab", True)
    cfg = build_config({
        "model": {"src_vocab_size": vocab, "tgt_vocab_size": vocab, "d_model": 32, "n_heads": 4,
                  "d_ff": 64, "n_encoder_layers": 2, "n_decoder_layers": 2, "dropout": 0.0,
                  **model},
        "data": {"train": "unused", "vocab_size": vocab, "joint_vocab": joint},
    }, "toy")
    (root / CHECKPOINT_DIR).mkdir(parents=True)
    (root / CONFIG_FILE).write_text(to_toml(cfg))
    for path in tokenizer_files(root, joint):
        tokenizer.save(path)
    torch.manual_seed(seed)
    model = Transformer(cfg.model)
    with torch.no_grad():  # LayerNorms away from their initial 1 and 0, to catch a swapped one
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    save_checkpoint(root / CHECKPOINT_DIR / BEST, model, None, {})
    return root


SENTENCES = (BUNDLED / "valid.en").read_text(encoding="utf-8").splitlines()[:8]
TARGETS = (BUNDLED / "valid.de").read_text(encoding="utf-8").splitlines()[:8]


@pytest.mark.parametrize("model", [
    {},
    {"pre_norm": False},
    {"tie_embeddings": False, "joint_vocab": False},
], ids=["pre-norm-tied", "post-norm", "untied-two-vocabularies"])
def test_ctranslate2_scores_every_piece_as_tinytrans_does(ctranslate2, small_tokenizer, tmp_path,
                                                          model):
    """Forced decoding of reference translations: the same log-probability for every piece."""
    run = handmade_run(tmp_path / "run", small_tokenizer, seed=3, **model)
    out = export_ctranslate2(run, tmp_path / "ct2")
    translator = Translator(run, precision="fp32")
    expected = translator.score(SENTENCES, TARGETS)
    engine = ctranslate2.Translator(str(out), device="cpu", intra_threads=1)
    results = engine.score_batch(translator.src_tok.encode_pieces(SENTENCES),
                                 translator.tgt_tok.encode_pieces(TARGETS))
    for ours, theirs in zip(expected, results, strict=True):
        assert len(theirs.log_probs) == len(ours)  # every piece, then </s>
        assert np.allclose(theirs.log_probs, ours, atol=1e-4)


def test_the_model_directory(ctranslate2, small_tokenizer, tmp_path):
    run = handmade_run(tmp_path / "run", small_tokenizer, seed=4)
    out = export_model(run, tmp_path / "ct2", "ctranslate2")
    assert {p.name for p in out.iterdir()} == {"model.bin", "config.json", "shared_vocabulary.json", "tinytrans.json",
                                               "tokenizer.model"}
    vocabulary = json.loads((out / "shared_vocabulary.json").read_text())
    assert vocabulary[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    sp = small_tokenizer.sp
    assert vocabulary == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    config = json.loads((out / "config.json").read_text())
    assert config["add_source_eos"] and not config["add_source_bos"]
    assert config["decoder_start_token"] == "<s>" and config["eos_token"] == "</s>"
    assert not list(tmp_path.glob(".ct2.*"))  # built aside, then renamed into place


def test_int8_export_is_smaller_and_translates(ctranslate2, small_tokenizer, tmp_path):
    run = handmade_run(tmp_path / "run", small_tokenizer, seed=5)
    fp32 = export_ctranslate2(run, tmp_path / "fp32")
    int8 = export_ctranslate2(run, tmp_path / "int8", quantization="int8")
    assert (int8 / "model.bin").stat().st_size < 0.6 * (fp32 / "model.bin").stat().st_size
    engine = ctranslate2.Translator(str(int8), device="cpu", intra_threads=1)
    result = engine.translate_batch(small_tokenizer.encode_pieces(SENTENCES[:2]), beam_size=2,
                                    max_decoding_length=10)
    assert all(r.hypotheses[0] for r in result)


@pytest.mark.parametrize("call, message", [
    (lambda run, out: export_model(run, out, "onnx"), "--format: 'onnx'"),
    (lambda run, out: export_ctranslate2(run, out, quantization="int4"), "--quantization: 'int4'"),
    (lambda run, out: export_ctranslate2(run, run), "already exists"),
    (lambda run, out: export_ctranslate2(run, out, checkpoint="average"), "no averaged checkpoint"),
])
def test_mistakes_are_one_line_errors(ctranslate2, small_tokenizer, tmp_path, call, message):
    run = handmade_run(tmp_path / "run", small_tokenizer, seed=6)
    with pytest.raises(UserError, match=message):
        call(run, tmp_path / "ct2")
    assert not (tmp_path / "ct2").exists()


def test_without_ctranslate2_export_says_what_to_install(small_tokenizer, tmp_path, monkeypatch):
    run = handmade_run(tmp_path / "run", small_tokenizer, seed=6)
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import now raises ImportError
    with pytest.raises(UserError, match=r"tinytrans\[export\]"):
        export_ctranslate2(run, tmp_path / "ct2")


# ---------------------------------------------------------------------------------------------
# A trained model: the same translations of the bundled test set


@pytest.fixture(scope="module")
def trained_run(varied_run) -> Path:
    """Trained for about half a minute: it translates badly, but every sentence differently."""
    return varied_run


@pytest.mark.slow
def test_ctranslate2_beam_search_finds_the_same_translations(ctranslate2, trained_run, tmp_path):
    lines = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:TEST_LINES]
    refs = (BUNDLED / "test.de").read_text(encoding="utf-8").splitlines()[:TEST_LINES]
    cfg = SearchConfig(beam=5, lenpen=1.0)
    translator = Translator(trained_run, checkpoint="last", precision="fp32")
    ours = [t.text for t in translator.translate(lines, cfg)]
    bleu = BLEU()
    assert len(set(ours)) > 0.9 * len(lines)  # varied output: the comparison means something
    assert bleu.corpus_score(ours, [refs]).score > 5

    out = export_ctranslate2(trained_run, tmp_path / "ct2", checkpoint="last")
    engine = ctranslate2.Translator(str(out), device="cpu", intra_threads=1)
    sources = translator.src_tok.encode_pieces(lines)
    longest = max(len(s) for s in sources)
    # CTranslate2 counts the length penalty the same way (log-prob / length^alpha, EOS included)
    # and stops a sentence when `beam_size` hypotheses have ended, as tinytrans does.
    results = engine.translate_batch(
        sources, beam_size=cfg.beam, length_penalty=cfg.lenpen, max_batch_size=32,
        max_decoding_length=int(cfg.max_len_a * longest + cfg.max_len_b) + 1)
    theirs = translator.tgt_tok.decode_pieces([r.hypotheses[0] for r in results])
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same >= 0.99 * len(lines), [(a, b) for a, b in zip(ours, theirs) if a != b][:5]
    bleu_ours, bleu_theirs = (bleu.corpus_score(x, [refs]).score for x in (ours, theirs))
    assert abs(bleu_theirs - bleu_ours) <= 0.2
