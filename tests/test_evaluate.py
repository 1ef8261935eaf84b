"""Scores with sacrebleu and their signatures, through the library and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tinytrans.cli import app
from tinytrans.errors import UserError
from tinytrans import evaluate as evaluate_module
from tinytrans.evaluate import (ScoreOptions, check_test_sets, evaluate_test_set, score_corpus,
                                score_files)
from tinytrans.config import SearchConfig, build_config, to_toml
from tinytrans.directions import Direction, Directions
from tinytrans.translate import Translation
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


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A toy run: five steps, enough to translate (badly)."""
    root = tmp_path_factory.mktemp("evaluate")
    train(toy_config(write_corpus(root / "train", 300), None, max_steps=5), root / "run")
    return root / "run"


def test_cli_translates_and_scores_test_sets(tmp_path, run):
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


# ---------------------------------------------------------------------------------------------
# Nothing to score is a user error, never a crash


def test_empty_hypotheses_and_references_are_nothing_to_score(tmp_path):
    hyp, ref = tmp_path / "hyp.de", tmp_path / "ref.de"
    hyp.write_text("")
    ref.write_text("")
    result = CliRunner().invoke(app, ["evaluate", "--hyp", str(hyp), "--ref", str(ref)])
    assert result.exit_code == 2, result.output
    assert "nothing to score" in result.stderr and str(hyp) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(UserError, match="nothing to score"):
        score_files(hyp, [ref], ScoreOptions())


@pytest.mark.parametrize("hyps, refs, message", [
    ([], [[]], "nothing to score"),
    ([], [[], []], "nothing to score"),
    (["a"], [], "no reference set"),
])
def test_score_corpus_refuses_an_empty_corpus(hyps, refs, message):
    with pytest.raises(UserError, match=message):
        score_corpus(hyps, refs, ScoreOptions())


def test_empty_lines_still_have_a_score():
    """Lines that are empty are sentences; only a corpus without sentences has no score."""
    scores = score_corpus(["", ""], [["", ""]], ScoreOptions())
    assert scores["sentences"] == 2 and scores["bleu"] == 0.0


def test_an_empty_test_set_is_nothing_to_score(tmp_path, run):
    for lang in ("en", "de"):
        (tmp_path / f"empty.{lang}").write_text("")
    result = CliRunner().invoke(app, ["evaluate", "--model", str(run), "--test",
                                      str(tmp_path / "empty"), "--beam", "1"])
    assert result.exit_code == 2, result.output
    assert "has no lines, nothing to score" in result.stderr and "empty.en" in result.stderr


# ---------------------------------------------------------------------------------------------
# Options and paths are checked before the first line is translated


ONE_PAIR = Directions((Direction("en", "de"),), tagged=False)


class MustNotTranslate:
    """A translator that fails the test if it is asked to translate anything."""

    directions = ONE_PAIR

    def __init__(self, *args, **kwargs):
        self.calls = 0

    def translate(self, lines: Iterable[str], cfg: SearchConfig,
                  **what) -> Iterator[Translation]:
        self.calls += 1
        raise AssertionError("translated before the options were checked")


class Echo:
    """A translator that returns its input: a perfect score against the source as reference."""

    directions = ONE_PAIR

    def translate(self, lines: Iterable[str], cfg: SearchConfig,
                  **what) -> Iterator[Translation]:
        return (Translation(line, [(0.0, line)]) for line in lines)


def same_corpus(prefix: Path, lines: list[str]) -> Path:
    for lang in ("en", "de"):
        Path(f"{prefix}.{lang}").write_text("".join(x + "\n" for x in lines))
    return prefix


@pytest.mark.parametrize("options", [
    {"tokenize": "BOGUS"}, {"tokenize": None}, {"lowercase": "yes"},
])
def test_score_options_check_themselves_when_built(options):
    with pytest.raises(UserError, match="--tokenize|--lowercase"):
        ScoreOptions(**options)


def test_a_tokenizer_sacrebleu_cannot_build_is_refused_when_built(monkeypatch):
    def bleu_without_mecab(**kwargs):
        raise RuntimeError("\nJapanese tokenization requires extra dependencies.\nPlease ...")
    monkeypatch.setattr(evaluate_module, "BLEU", bleu_without_mecab)
    with pytest.raises(UserError, match=r"^--tokenize ja-mecab: sacrebleu cannot use it here "
                                        r"\(Japanese tokenization requires extra dependencies.\)$"):
        ScoreOptions(tokenize="ja-mecab")


def test_cli_refuses_a_bad_tokenize_before_loading_the_model(tmp_path):
    """The run directory does not even exist: the option is checked first."""
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "no-run"), "--test",
                                      str(tmp_path / "no-test"), "--tokenize", "BOGUS"])
    assert result.exit_code == 2 and "--tokenize: 'BOGUS' is not one of" in result.stderr


def save_hyp_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("mine\n")
    return tmp_path / "file"


def save_hyp_under_a_file(tmp_path: Path) -> Path:
    return save_hyp_is_a_file(tmp_path) / "hyps"


def hyp_file_is_a_directory(tmp_path: Path) -> Path:
    (tmp_path / "hyps" / "test.de.hyp").mkdir(parents=True)
    return tmp_path / "hyps"


@pytest.mark.parametrize("save_hyp, message", [
    (save_hyp_is_a_file, "exists and is not a directory"),
    (save_hyp_under_a_file, "cannot create the directory"),
    (hyp_file_is_a_directory, "is a directory"),
])
def test_a_bad_save_hyp_is_found_before_translating(tmp_path, save_hyp, message):
    test = same_corpus(tmp_path / "test", ["A man.", "A dog."])
    translator = MustNotTranslate()
    target = save_hyp(tmp_path)
    with pytest.raises(UserError, match=message):
        evaluate_test_set(translator, str(test), "en", "de", SearchConfig(), ScoreOptions(), target)
    with pytest.raises(UserError, match=message):
        check_test_sets([str(test)], "en", "de", target)
    assert translator.calls == 0
    if (tmp_path / "file").exists():
        assert (tmp_path / "file").read_text() == "mine\n"


def missing_test_set(tmp_path: Path) -> Path:
    return tmp_path / "missing"


def empty_test_set(tmp_path: Path) -> Path:
    return same_corpus(tmp_path / "empty", [])


def unequal_test_set(tmp_path: Path) -> Path:
    same_corpus(tmp_path / "unequal", ["A man."])
    (tmp_path / "unequal.de").write_text("Ein Mann.\nEin Hund.\n")
    return tmp_path / "unequal"


@pytest.mark.parametrize("bad_test_set, message", [
    (missing_test_set, "missing.en: no such file"),
    (empty_test_set, "empty.en: test set .* has no lines"),
    (unequal_test_set, "unequal"),
])
def test_a_bad_test_set_is_found_before_translating(tmp_path, bad_test_set, message):
    good = same_corpus(tmp_path / "good", ["A man."])
    bad = bad_test_set(tmp_path)
    translator = MustNotTranslate()
    with pytest.raises(UserError, match=message):
        evaluate_test_set(translator, str(bad), "en", "de", SearchConfig(), ScoreOptions())
    # every test set at once, before a model is loaded: the bad one need not come first
    with pytest.raises(UserError, match=message):
        check_test_sets([str(good), str(bad)], "en", "de", tmp_path / "hyps")
    assert translator.calls == 0


class StubTranslator(MustNotTranslate):
    """What cli.evaluate loads in place of a model."""

    translated = 0
    precision_choice = "fp32 (as asked)"

    def translate(self, lines, cfg, **what):
        StubTranslator.translated += 1
        return super().translate(lines, cfg, **what)


def test_cli_checks_save_hyp_before_translating(tmp_path, monkeypatch):
    """The model is a stub that fails if asked to translate: the error must come first."""
    monkeypatch.setattr("tinytrans.translate.Translator", StubTranslator)
    monkeypatch.setattr(StubTranslator, "translated", 0)
    test = same_corpus(tmp_path / "test", ["A man."])
    target = save_hyp_under_a_file(tmp_path)
    # the command reads the run's directions from its config before loading anything
    (tmp_path / "config.toml").write_text(to_toml(build_config({"data": {"train": "x"}})))
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path), "--test", str(test),
                                      "--save-hyp", str(target)])
    assert result.exit_code == 2, result.output
    assert "cannot create the directory" in result.stderr and StubTranslator.translated == 0


def test_checked_options_still_translate_save_and_score(tmp_path):
    test = same_corpus(tmp_path / "test", ["A man rides a bike.", "The cat sits on the mat."])
    check_test_sets([str(test)], "en", "de", tmp_path / "hyps")
    scores = evaluate_test_set(Echo(), str(test), "en", "de", SearchConfig(), ScoreOptions(),
                               tmp_path / "hyps")
    assert scores["bleu"] == 100.0 and scores["sentences"] == 2 and scores["test"] == str(test)
    assert (tmp_path / "hyps" / "test.de.hyp").read_text() == Path(f"{test}.en").read_text()
