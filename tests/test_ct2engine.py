"""`--engine ctranslate2`: an exported model translated by CTranslate2 with tinytrans' line
handling: the same translations as the PyTorch engine, one line out per line in, atomic
--output, one-line errors for what it cannot do, and no torch imported on its path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_cli import assert_one_line_error, invoke
from tinytrans.config import SearchConfig
from tinytrans.errors import UserError
from tinytrans.lines import LineOptions
from tinytrans.terminology import Glossary
from tinytrans.translate import Translator
from toyrun import BUNDLED

pytest.importorskip("ctranslate2", reason="the export extra (ctranslate2) is not installed")

from tinytrans.ct2engine import EXPORT_INFO, CT2Translator, read_export_info  # noqa: E402
from tinytrans.export import export_ctranslate2  # noqa: E402

LINES = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:30]


@pytest.fixture(scope="module")
def exported(varied_run: Path, tmp_path_factory) -> Path:
    return export_ctranslate2(varied_run, tmp_path_factory.mktemp("ct2") / "model")


@pytest.fixture(scope="module")
def engine(exported: Path) -> CT2Translator:
    return CT2Translator(exported, threads=1)


def test_the_export_keeps_the_runs_language_identifier(engine):
    assert [g.language for g in engine.detect(["A man is walking.", "Ein Mann geht."])] == ["en", "de"]


def test_the_export_says_what_the_engine_needs(exported, varied_run):
    info = read_export_info(exported)
    assert (info["src"], info["tgt"], info["joint_vocab"]) == ("en", "de", True)
    assert info["max_length"] == 128 and info["checkpoint"] == "best"


def test_the_same_translations_as_the_pytorch_engine(engine, varied_run):
    torch_engine = Translator(varied_run, precision="fp32", device="cpu")
    for cfg in (SearchConfig(beam=1), SearchConfig(beam=4)):
        ours = [t.text for t in torch_engine.translate(LINES, cfg)]
        theirs = [t.text for t in engine.translate(LINES, cfg)]
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        assert same >= len(LINES) - 1, [(a, b) for a, b in zip(ours, theirs) if a != b]


def test_lines_empty_and_long_keep_their_places(engine):
    long_line = " ".join(f"{LINES[i % 5].rstrip('.?!')} {i}." for i in range(60))
    lines = [LINES[0], "", long_line, "   ", LINES[1]]
    out = [t.text for t in engine.translate(lines, SearchConfig(beam=2))]
    assert len(out) == 5 and out[1] == "" and out[3] == ""
    assert len(out[2].split()) > 5 * len(out[0].split())  # split into sentences, joined back


def test_nbest(engine):
    [result] = engine.translate(LINES[:1], SearchConfig(beam=4, nbest=3))
    assert len(result.nbest) == 3 and result.text == result.nbest[0][1]
    scores = [score for score, _ in result.nbest]
    assert scores == sorted(scores, reverse=True)


def test_prefixes_as_the_pytorch_engine_completes_them(engine, varied_run):
    """Greedy completes a prefix as the PyTorch engine does. A beam may rank its finished
    hypotheses otherwise: CTranslate2 scores the continuation alone (its log-probability over its
    length), tinytrans the whole hypothesis, prefix included, as fairseq does."""
    torch_engine = Translator(varied_run, precision="fp32", device="cpu")
    starts = ["Ein kleiner", "", "Zwei Frauen", "Der Hund", ""] * 2
    for cfg in (SearchConfig(beam=1), SearchConfig(beam=4)):
        ours = [t.text for t in torch_engine.translate(LINES[:10], cfg, prefixes=starts)]
        theirs = [t.text for t in engine.translate(LINES[:10], cfg, prefixes=starts)]
        assert all(text.startswith(start) and len(text) > len(start)
                   for text, start in zip(theirs, starts))
        assert [a for a, s in zip(ours, starts) if not s] == [b for b, s in zip(theirs, starts) if not s]
        if cfg.beam == 1:
            same = sum(a == b for a, b in zip(ours, theirs, strict=True))
            assert same >= 9, [(a, b) for a, b in zip(ours, theirs) if a != b]


@pytest.mark.parametrize("kwargs, message", [
    ({"constraints": [["Haus"]]}, "no lexical constraints"),
    ({"options": LineOptions(glossary=Glossary.from_pairs({"a": "b"}))}, "no lexical constraints"),
    ({"options": LineOptions(alignment=True)}, "gives no alignments"),
    ({"cfg": SearchConfig(sample=0)}, "cannot reproduce samples"),
])
def test_what_it_cannot_do_is_refused(engine, kwargs, message):
    cfg = kwargs.pop("cfg", SearchConfig())
    with pytest.raises(UserError, match=message):
        list(engine.translate(LINES[:1], cfg, **kwargs))


def test_a_run_directory_is_not_an_export(varied_run):
    with pytest.raises(UserError, match="not a CTranslate2 model directory.*tinytrans export"):
        CT2Translator(varied_run)


@pytest.mark.parametrize("info, message", [
    (None, "missing; this export is older"),
    ("{", "unreadable"),
    ("[]", "expected a JSON object"),
    ('{"src": "en", "tgt": "de", "max_length": true, "joint_vocab": true}', "'max_length' must be"),
    ('{"src": "en", "tgt": "de", "max_length": 0, "joint_vocab": true}', "at least 1"),
    ('{"src": 1, "tgt": "de", "max_length": 9, "joint_vocab": true}', "'src' must be a str"),
])
def test_a_damaged_export_info_is_one_line(exported, tmp_path, info, message):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(exported), str(copy)], check=True)
    if info is None:
        (copy / EXPORT_INFO).unlink()
    else:
        (copy / EXPORT_INFO).write_text(info, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        CT2Translator(copy)


def test_the_cli_translates_a_file_without_importing_torch(exported, tmp_path):
    source, output = tmp_path / "in.en", tmp_path / "out.de"
    source.write_text("".join(line + "\n" for line in LINES[:5] + [""]), encoding="utf-8")
    program = (
        "import sys, runpy\n"
        "sys.argv = ['tinytrans', 'translate', '--engine', 'ctranslate2', '--model', sys.argv[1],"
        " '--input', sys.argv[2], '--output', sys.argv[3], '--threads', '1']\n"
        "try:\n"
        "    runpy.run_module('tinytrans', run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", program, str(exported), str(source), str(output)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    out = output.read_text(encoding="utf-8").split("\n")
    assert len(out) == 7 and out[5] == "" and all(out[:5])


def test_cli_mistakes_with_this_engine_are_one_line(exported, varied_run, tmp_path):
    result = invoke("translate", "--engine", "ctranslate2", "--model", exported, "--alignment",
                    input="A man.\n")
    assert_one_line_error(result, 2, "gives no alignments")
    result = invoke("translate", "--engine", "ctranslate2", "--model", exported, "--precision",
                    "int8", input="A man.\n")
    assert_one_line_error(result, 2, "--precision: with --engine ctranslate2 the export decides")
    result = invoke("translate", "--engine", "ctranslate2", "--model", varied_run,
                    input="A man.\n")
    assert_one_line_error(result, 2, "not a CTranslate2 model directory", "tinytrans export")
    info = json.loads((exported / EXPORT_INFO).read_text())
    assert info["quantization"] == "float32"


def test_loading_leaves_pytorchs_thread_count_alone(exported):
    import torch
    before = torch.get_num_threads()
    CT2Translator(exported)  # CTranslate2 picks its own threads: OpenMP's count for the process
    CT2Translator(exported, threads=before + 1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("swapped", ["vocabulary", "tokenizer", "damaged vocabulary"])
def test_an_export_whose_vocabulary_and_tokenizer_disagree_is_one_line(exported, tmp_path, swapped):
    """Another export's shared_vocabulary.json crashed CTranslate2 (exit 3); another export's
    tokenizer.model translated into wrong text (exit 0). Both are refused where they are loaded."""
    from tinytrans.tokenizer import Tokenizer, train_tokenizer
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(exported), str(copy)], check=True)
    text = tmp_path / "other.txt"
    text.write_text("\n".join(f"zebra {i} quux xylophone {i * 7}" for i in range(300)) + "\n")
    other = train_tokenizer([text], tmp_path / "other", 60)
    if swapped == "vocabulary":
        (copy / "shared_vocabulary.json").write_text(json.dumps(other.pieces()))
    elif swapped == "tokenizer":
        (copy / "tokenizer.model").write_bytes((tmp_path / "other.model").read_bytes())
    else:
        (copy / "shared_vocabulary.json").write_text("[1, 2")
    cause = "unreadable" if swapped == "damaged vocabulary" else "come from different runs"
    with pytest.raises(UserError, match=cause):
        CT2Translator(copy)
    result = invoke("translate", "--model", copy, "--engine", "ctranslate2", input="A man.\n")
    assert_one_line_error(result, 2, cause)
    assert isinstance(Tokenizer.load(copy / "tokenizer.model"), Tokenizer)


def test_this_engine_says_it_shows_no_attention(engine):
    assert engine.attention_shape() is None
    assert (engine.source_language, engine.target_language, engine.max_source_pieces) == \
        ("en", "de", 128)
