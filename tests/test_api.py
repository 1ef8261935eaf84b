"""The Python API: the CLI's translations, forced-decoding scores, attention, one line per input."""

from __future__ import annotations

import random
from pathlib import Path
from statistics import mean

import pytest
from typer.testing import CliRunner

import tinytrans
from tinytrans.cli import app
from tinytrans.errors import UserError
from tinytrans.search import SearchConfig
from tinytrans.train import train
from tinytrans.translate import Translator
from toyrun import BUNDLED, varied_config, write_corpus

LINES = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:16]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Trained just enough that every sentence gets its own translation."""
    root = tmp_path_factory.mktemp("api")
    cfg = varied_config(write_corpus(root / "train", 2000), 200, "api test")
    train(cfg, root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def model(run_dir) -> tinytrans.TranslationModel:
    return tinytrans.load(run_dir, precision="fp32")


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


def test_long_inputs_are_cut_with_a_warning(model):
    with pytest.warns(UserWarning, match="truncated"):
        out = model.translate([" ".join(["house"] * 300)], beam=1)
    assert len(out) == 1


@pytest.mark.parametrize("call, message", [
    (lambda m: m.translate("A single string."), "wrap it in a list"),
    (lambda m: m.translate(["x"], beam=0), "--beam"),
    (lambda m: m.translate(["x"], beam=2, nbest=3), "--nbest"),
    (lambda m: m.score(["a", "b"], ["c"]), "2 sources but 1 targets"),
    (lambda m: m.attention(""), "empty"),
])
def test_mistakes_are_user_errors(model, call, message):
    with pytest.raises(UserError, match=message):
        call(model)


def test_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="not a tinytrans run directory"):
        tinytrans.load(tmp_path)
