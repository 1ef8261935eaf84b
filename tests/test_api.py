"""The Python API: the CLI's translations, forced-decoding scores, attention, one line per input."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from statistics import mean

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tinytrans
from tinytrans.cli import app
from tinytrans.errors import UserError
from tinytrans.config import SearchConfig
from tinytrans.translate import Translator
from toyrun import BUNDLED

LINES = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:16]


@pytest.fixture(scope="module")
def run_dir(varied_run) -> Path:
    """Trained just enough that every sentence gets its own translation (conftest.varied_run)."""
    return varied_run


@pytest.fixture(scope="module")
def model(run_dir) -> tinytrans.TranslationModel:
    return tinytrans.load(run_dir, precision="fp32")


@pytest.mark.slow
def test_translations_are_the_clis(run_dir, model):
    lines = ["", LINES[0], "   ", *LINES[1:6]]
    ours = model.translate(lines, beam=4)
    cli = CliRunner().invoke(app, ["translate", "--model", str(run_dir), "--beam", "4",
                                   "--precision", "fp32"], input="".join(x + "\n" for x in lines))
    assert cli.exit_code == 0, cli.output
    assert ours == cli.stdout.split("\n")[:-1]
    translator = Translator(run_dir, precision="fp32")
    assert ours == [t.text for t in translator.translate(lines, SearchConfig(beam=4))]
    assert ours[0] == ours[2] == "" and all(ours[1:2] + ours[3:])


def test_nbest_gives_scored_lists_led_by_the_best(model):
    best = model.translate(LINES[:4], beam=4)
    nbest = model.translate(LINES[:4] + [""], beam=4, nbest=3)
    assert len(nbest) == 5 and nbest[4] == []  # an empty input has no hypotheses
    for one, hyps in zip(best, nbest):
        assert len(hyps) == 3 and hyps[0][1] == one
        scores = [score for score, _ in hyps]
        assert scores == sorted(scores, reverse=True)


def test_prefixes_begin_the_translations_and_are_checked(model):
    free = model.translate(LINES[:3], beam=3)
    started = model.translate(LINES[:3], beam=3, prefixes=["Ein  kleiner", "", "Zwei"])
    assert started[0].startswith("Ein kleiner ") and started[1] == free[1]
    assert started[2].startswith("Zwei")
    for wrong, cause in (("Ein", "must be a list"), (["Ein"], "1 items but sentences has 3"),
                         ([1, "", ""], "is not a prefix"), (["x" * 3000, "", ""], "3,000")):
        with pytest.raises(UserError, match=cause):
            model.translate(LINES[:3], prefixes=wrong)


def test_score_is_what_the_search_found(model):
    """With no length penalty a hypothesis' search score is its log-probability, and forced
    decoding of its text gives it back, whenever the text turns back into the same pieces."""
    found = [hyps[0] for hyps in model.translate(LINES, beam=4, lenpen=0.0, nbest=1)]
    scores = model.score(LINES, [text for _, text in found])
    translator = model.translator
    tokens = [h[0].tokens for h in
              translator.translate_batch(translator.source_ids(LINES), SearchConfig(4, lenpen=0.0))]
    same_pieces = [translator.tgt_tok.encode([text])[0] == t for (_, text), t in zip(found, tokens)]
    assert sum(same_pieces) >= len(LINES) // 2
    for (search_score, _), score, same in zip(found, scores, same_pieces):
        if same:
            assert score == pytest.approx(search_score, abs=1e-4)


def test_the_models_own_translation_scores_higher_than_scrambled_ones(model):
    own = model.translate(LINES, beam=4, lenpen=0.0)
    assert len(set(own)) == len(own)  # every sentence its own translation
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(t.split(), len(t.split()))) for t in own]
    assert sum(a != b for a, b in zip(own, shuffled)) >= len(own) - 2
    for mine, scrambled, a, b in zip(model.score(LINES, own), model.score(LINES, shuffled),
                                     own, shuffled):
        assert mine > scrambled or a == b
    # another sentence's translation: less probable per piece (its total may be higher when it
    # is much shorter, since every piece costs log-probability)
    others = own[1:] + own[:1]
    for mine, theirs in zip(model.score_pieces(LINES, own), model.score_pieces(LINES, others)):
        assert mean(lp for _, lp in mine) > mean(lp for _, lp in theirs)


def test_score_pieces_add_up_to_the_score(model):
    targets = ["Ein Mann fährt ein rotes Auto.", ""]
    pieces = model.score_pieces(LINES[:2], targets)
    expected = model.translator.tgt_tok.encode_pieces(targets[:1])[0] + ["</s>"]
    assert [p for p, _ in pieces[0]] == expected
    assert [p for p, _ in pieces[1]] == ["</s>"]
    for row, total in zip(pieces, model.score(LINES[:2], targets)):
        assert sum(lp for _, lp in row) == pytest.approx(total, abs=1e-5)
        assert all(lp <= 0 for _, lp in row)


def test_attention_follows_the_translation(model):
    result = model.attention(LINES[0], beam=3)
    assert result.translation == model.translate(LINES[:1], beam=3)[0]
    assert result.cross.shape[-2:] == (len(result.target), len(result.source))


def test_long_inputs_are_split_or_with_splitting_off_cut_with_a_warning(model):
    line = " ".join(["house"] * 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: split into pieces that fit
        [whole] = model.translate([line], beam=1)
    with pytest.warns(UserWarning, match="truncated"):
        [cut] = model.translate([line], beam=1, split_sentences=False)
    assert len(cut.split()) < len(whole.split())


# Each mistake, the message it gives: it names the argument as the caller wrote it.
CALL_MISTAKES = [
    # the sentences
    (lambda m: m.translate("A single string."), r"sentences: .*wrap it in a list"),
    (lambda m: m.translate(None), r"sentences: None \(NoneType\) must be a list"),
    (lambda m: m.translate(42), r"sentences: 42 \(int\) must be a list"),
    (lambda m: m.translate(b"A man."), r"sentences: b'A man.' \(bytes\) must be a list"),
    (lambda m: m.translate([None]), r"sentences\[0\]: None \(NoneType\) must be a sentence"),
    (lambda m: m.translate(["a", "b", 42]), r"sentences\[2\]: 42 \(int\)"),
    (lambda m: m.translate([["nested"]]), r"sentences\[0\]: \['nested'\] \(list\)"),
    (lambda m: m.translate([b"A man."]), r"sentences\[0\]: b'A man.' \(bytes\)"),
    # the search settings
    (lambda m: m.translate(["x"], beam=0), r"^beam: 0 must lie between 1 and 256$"),
    (lambda m: m.translate(["x"], beam="5"), r"beam: '5' \(str\) must be an int"),
    (lambda m: m.translate(["x"], beam=True), r"beam: True \(bool\) must be an int"),
    (lambda m: m.translate(["x"], beam=2.0), r"beam: 2.0 \(float\) must be an int"),
    (lambda m: m.translate(["x"], nbest=0), r"nbest: 0 must lie between 1 and beam \(5\)"),
    (lambda m: m.translate(["x"], beam=2, nbest=3), r"nbest: 3 must lie between 1 and beam \(2\)"),
    (lambda m: m.translate(["x"], nbest=True), r"nbest: True \(bool\) must be an int"),
    (lambda m: m.translate(["x"], lenpen=-1), r"lenpen: -1.0 must be a number in \[0, 10\]"),
    (lambda m: m.translate(["x"], lenpen=1000), r"lenpen: 1000.0 must be a number in \[0, 10\]"),
    (lambda m: m.translate(["x"], glossary={"a": "b"}, glossary_method="exact"),
     r"glossary_method: 'exact' \(str\) must be one of place, constrain"),
    (lambda m: m.translate(["x"], beam=257), r"beam: 257 must lie between 1 and 256"),
    (lambda m: m.translate(["x"], sample="all", temperature=1e39),
     r"temperature: 1e\+39 must be a number in \[0, 100\]"),
    (lambda m: m.translate(["x"], sample="all", seed=2**63), r"seed: 9223372036854775808 must"),
    (lambda m: m.translate(["x"], sample=10**12), r"sample: 1000000000000 must be a number of"),
    (lambda m: m.translate(["x"], lenpen="1"), r"lenpen: '1' \(str\) must be a number"),
    (lambda m: m.translate(["x"], lenpen=float("nan")), r"lenpen: nan must be"),
    (lambda m: m.translate(["x"], lenpen=False), r"lenpen: False \(bool\) must be a number"),
    (lambda m: m.translate(["x"], max_len_a=11), r"max_len_a: 11.0 must be a number in \[0, 10\]"),
    (lambda m: m.translate(["x"], max_len_b=0), r"max_len_b: 0 must lie between 1 and 1024"),
    (lambda m: m.translate(["x"], max_len_b=None), r"max_len_b: None \(NoneType\) must be an int"),
    # forced decoding
    (lambda m: m.score([None], ["x"]), r"sources\[0\]: None \(NoneType\)"),
    (lambda m: m.score(["x"], ["y", 7]), r"targets\[1\]: 7 \(int\)"),
    (lambda m: m.score(["a", "b"], ["c"]), r"sources has 2 sentences but targets has 1"),
    (lambda m: m.score("a", ["b"]), r"sources: .*wrap it in a list"),
    (lambda m: m.score(["a"], 5), r"targets: 5 \(int\) must be a list"),
    (lambda m: m.score(["a"], None), r"targets: None"),
    (lambda m: m.score_pieces([1], ["x"]), r"sources\[0\]: 1 \(int\)"),
    (lambda m: m.score_pieces(["a"], ["b", "c"]), r"sources has 1 sentences but targets has 2"),
    # attention
    (lambda m: m.attention(None), r"source: None \(NoneType\) must be one sentence"),
    (lambda m: m.attention(["A man."]), r"source: \['A man.'\] \(list\) must be one sentence"),
    (lambda m: m.attention(""), r"empty"),
    (lambda m: m.attention("A man.", beam=0), r"^beam: 0 must lie between 1 and 256$"),
    (lambda m: m.attention("A man.", lenpen="x"), r"lenpen: 'x' \(str\) must be a number"),
]


@pytest.mark.parametrize("call, message", CALL_MISTAKES)
def test_mistakes_are_user_errors_naming_the_argument(model, call, message):
    with pytest.raises(UserError, match=message) as caught:
        call(model)
    assert "--" not in str(caught.value) and "\n" not in str(caught.value)  # not a CLI flag


LOAD_MISTAKES = [
    (lambda run: tinytrans.load(None), r"run_dir: None \(NoneType\) must be a path"),
    (lambda run: tinytrans.load(42), r"run_dir: 42 \(int\) must be a path"),
    (lambda run: tinytrans.load(bytes(run)), r"run_dir: b'.* \(bytes\) must be a path"),
    (lambda run: tinytrans.load(run, checkpoint=3), r"checkpoint: 3 \(int\) must be a path"),
    (lambda run: tinytrans.load(run, checkpoint=None), r"checkpoint: None"),
    (lambda run: tinytrans.load(run, device="gpu"),
     r"device: 'gpu' \(str\) is not one of auto, cpu, cuda"),
    (lambda run: tinytrans.load(run, device=None), r"device: None \(NoneType\) is not one of"),
    (lambda run: tinytrans.load(run, precision="fp16"), r"precision: 'fp16' \(str\) is not one of"),
    (lambda run: tinytrans.load(run, precision=8), r"precision: 8 \(int\) is not one of"),
    (lambda run: tinytrans.load(run, threads=0), r"^threads: 0 must be at least 1$"),
    (lambda run: tinytrans.load(run, threads="2"), r"threads: '2' \(str\) must be an int"),
    (lambda run: tinytrans.load(run, threads=True), r"threads: True \(bool\) must be an int"),
    (lambda run: tinytrans.load(run, threads=1.5), r"threads: 1.5 \(float\) must be an int"),
]


@pytest.mark.parametrize("call, message", LOAD_MISTAKES)
def test_load_mistakes_are_user_errors_naming_the_argument(run_dir, call, message):
    with pytest.raises(UserError, match=message) as caught:
        call(run_dir)
    assert "--" not in str(caught.value) and "\n" not in str(caught.value)


def test_int8_on_a_gpu_is_refused_in_the_apis_words(run_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(UserError, match=r"precision: 'int8' runs on the CPU only \(device='cpu'\)"):
        tinytrans.load(run_dir, precision="int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_in_the_apis_words(run_dir):
    with pytest.raises(UserError, match=r"^device: 'cuda', but no CUDA GPU"):
        tinytrans.load(run_dir, device="cuda")


def test_any_iterable_of_str_and_any_integer_will_do(model):
    """Tuples, generators and numpy integers are what a caller has at hand; bools are not."""
    lines, targets = LINES[:3], ["Ein Mann.", "", "Eine Frau."]
    expected = model.translate(lines, beam=2)
    assert model.translate(tuple(lines), beam=np.int64(2)) == expected
    assert model.translate((x for x in lines), beam=2, lenpen=np.float32(1.0)) == expected
    # both arguments are read once: a generator of targets is not used up by the scoring
    assert model.score_pieces(iter(lines), iter(targets)) == model.score_pieces(lines, targets)
    assert model.translate([]) == [] and model.score([], []) == []


def test_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="not a tinytrans run directory"):
        tinytrans.load(tmp_path)
