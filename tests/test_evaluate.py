"""Scores with sacrebleu and their signatures, through the library and the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tinytrans.cli import app
from tinytrans.errors import UserError
from tinytrans.evaluate import ScoreOptions, score_corpus
from tinytrans.train import train
from toyrun import toy_config, write_corpus

REFS = ["The cat sits on the mat.", "A man rides a red bike."]


def test_perfect_hypotheses_score_perfectly_with_signatures():
    scores = score_corpus(REFS, [REFS], ScoreOptions())
    assert scores["bleu"] == 100.0 and scores["chrf"] == 100.0 and scores["ter"] == 0.0
    assert scores["sentences"] == 2
    assert "case:mixed" in scores["signatures"]["bleu"] and "tok:13a" in scores["signatures"]["bleu"]
    assert "nrefs:1" in scores["signatures"]["chrf"] and "case:mixed" in scores["signatures"]["ter"]


def test_lowercase_and_tokenize_pass_through_to_sacrebleu():
    hyps = [r.upper() for r in REFS]
    cased = score_corpus(hyps, [REFS], ScoreOptions())
    lower = score_corpus(hyps, [REFS], ScoreOptions(lowercase=True, tokenize="intl"))
    assert cased["bleu"] < 10 and lower["bleu"] == 100.0
    assert "case:lc" in lower["signatures"]["bleu"] and "tok:intl" in lower["signatures"]["bleu"]
    with pytest.raises(UserError, match="--tokenize"):
        score_corpus(hyps, [REFS], ScoreOptions(tokenize="nonsense"))


def test_cli_scores_a_file_as_json(tmp_path):
    hyp, ref = tmp_path / "hyp.de", tmp_path / "ref.de"
    hyp.write_text("The cat sits on the mat.\nA man rides a bike.\n")
    ref.write_text("\n".join(REFS) + "\n")
    result = CliRunner().invoke(app, ["evaluate", "--hyp", str(hyp), "--ref", str(ref), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert 0 < scores["bleu"] < 100 and set(scores["signatures"]) == {"bleu", "chrf", "ter"}


def test_cli_refuses_references_of_another_length(tmp_path):
    hyp, ref = tmp_path / "hyp.de", tmp_path / "ref.de"
    hyp.write_text("one\n")
    ref.write_text("one\ntwo\n")
    result = CliRunner().invoke(app, ["evaluate", "--hyp", str(hyp), "--ref", str(ref)])
    assert result.exit_code == 2 and "has 1 lines but" in result.stderr


def test_cli_translates_and_scores_test_sets(tmp_path):
    run = tmp_path / "run"
    train(toy_config(write_corpus(tmp_path / "train", 300), None, max_steps=5), run)
    test = write_corpus(tmp_path / "test", 25, "test")
    result = CliRunner().invoke(app, ["evaluate", "--model", str(run), "--test", str(test), "--src", "en",
                                      "--tgt", "de", "--beam", "2", "--json", "--save-hyp", str(tmp_path / "hyps")])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert {"test", "bleu", "chrf", "ter", "signatures", "sentences", "seconds"} <= scores.keys()
    assert scores["sentences"] == 25
    saved = (tmp_path / "hyps" / "test.de.hyp").read_text().split("\n")
    assert len(saved) == 26  # 25 lines and the final newline
    table = CliRunner().invoke(app, ["evaluate", "--model", str(run), "--test", str(test), "--beam", "1"])
    assert table.exit_code == 0 and "BLEU" in table.stdout and "nrefs:1" in table.stdout
