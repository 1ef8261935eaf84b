"""The language identifier (langid.py): n-grams, training, identifying, the saved file checked
as untrusted input; and where it is used: a trained run's langid.json, `tinytrans detect`, the
API's detect, serve's /detect (tests/test_serve.py) and the export (tests/test_ct2engine.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import tinytrans
from helpers_cli import assert_one_line_error, invoke
from tinytrans.config import SearchConfig
from tinytrans.errors import UserError
from tinytrans.langid import (LANGID_FILE, LanguageIdentifier, evenly_spaced, identifier_in,
                              ngrams)
from toyrun import BUNDLED

SAMPLES = {
    "en": ["the man is walking the dog", "a woman with the hat", "two children are playing"],
    "de": ["der Mann geht mit dem Hund", "eine Frau mit dem Hut", "zwei Kinder spielen"],
}


def test_ngrams_are_one_to_four_characters_of_the_padded_line_with_digits_as_zero():
    grams = ngrams("ab  7")
    text = " ab 0 "  # whitespace collapsed, padded, the digit made 0
    assert grams == [text[i: i + n] for n in (1, 2, 3, 4) for i in range(len(text) - n + 1)]
    assert ngrams("") == [" ", " ", "  "]


def test_each_language_is_told_from_the_other_and_scores_are_log_likelihoods():
    identifier = LanguageIdentifier.train(SAMPLES)
    assert identifier.languages == ["en", "de"]
    assert identifier.identify("the dog and the man").language == "en"
    assert identifier.identify("der Hund und die Frau").language == "de"
    guess = identifier.identify("the hat")
    scores = identifier.scores("the hat")
    posterior = 100 / sum(math.exp(s - scores[guess.language]) for s in scores.values())
    assert guess.confidence == round(posterior, 1) and 50 <= guess.confidence <= 100
    table = identifier.log_probs["en"]
    assert scores["en"] == pytest.approx(sum(table.get(g, identifier.floors["en"])
                                             for g in ngrams("the hat")))
    assert all(v < 0 for v in table.values()) and identifier.floors["en"] < min(table.values())


def test_an_empty_line_gets_no_confidence():
    guess = LanguageIdentifier.train(SAMPLES).identify("   ")
    assert guess.language == "en" and guess.confidence == 0.0


def test_keep_bounds_the_ngrams_of_each_language():
    identifier = LanguageIdentifier.train(SAMPLES, keep=10)
    assert all(len(table) == 10 for table in identifier.log_probs.values())


def test_nothing_to_learn_is_one_line():
    with pytest.raises(UserError, match="no languages"):
        LanguageIdentifier.train({})
    with pytest.raises(UserError, match="no text in 'fr'"):
        LanguageIdentifier.train({"fr": []})


def test_saved_and_loaded_it_identifies_the_same(tmp_path):
    identifier = LanguageIdentifier.train(SAMPLES)
    identifier.save(tmp_path / LANGID_FILE)
    again = identifier_in(tmp_path)
    assert again == identifier
    assert identifier_in(tmp_path / "elsewhere") is None  # a run made before identifiers


def damaged(tmp_path: Path, change) -> Path:
    LanguageIdentifier.train(SAMPLES).save(tmp_path / LANGID_FILE)
    data = json.loads((tmp_path / LANGID_FILE).read_text(encoding="utf-8"))
    change(data)
    (tmp_path / LANGID_FILE).write_text(json.dumps(data), encoding="utf-8")
    return tmp_path / LANGID_FILE


@pytest.mark.parametrize("change, cause", [
    (lambda d: d.update(format=2), "not a language identifier"),
    (lambda d: d.update(orders=[1, 2]), "not a language identifier"),
    (lambda d: d.update(languages={}), "1 to 200 languages"),
    (lambda d: d.update(languages=["en"]), "1 to 200 languages"),
    (lambda d: d["languages"]["en"].update(floor=0.5), "'en' is damaged"),
    (lambda d: d["languages"]["en"].update(floor="x"), "'en' is damaged"),
    (lambda d: d["languages"]["de"]["log_probs"].update({"ab": float("nan")}), "'de' is damaged"),
    (lambda d: d["languages"].update(de=[1, 2]), "'de' is damaged"),
    (lambda d: d["languages"]["en"].update(floor=-1e308), "'en' is damaged"),  # sums to -inf
    (lambda d: d["languages"].update({"\udc80x": d["languages"]["en"]}), "not a language code"),
])
def test_a_damaged_file_is_one_line(tmp_path, change, cause):
    with pytest.raises(UserError, match=cause):
        LanguageIdentifier.load(damaged(tmp_path, change))


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    LanguageIdentifier.train(SAMPLES).save(tmp_path / LANGID_FILE)
    monkeypatch.setattr("tinytrans.langid.MAX_FILE_BYTES", 100)
    with pytest.raises(UserError, match="over 100 bytes"):
        LanguageIdentifier.load(tmp_path / LANGID_FILE)


def test_a_file_that_is_not_json_is_one_line(tmp_path):
    (tmp_path / LANGID_FILE).write_bytes(b"\xff{")
    with pytest.raises(UserError, match="unreadable"):
        LanguageIdentifier.load(tmp_path / LANGID_FILE)


def test_evenly_spaced_takes_about_the_wanted_lines_without_random_numbers():
    assert evenly_spaced(10, 3) == [0, 3, 6]
    assert evenly_spaced(2, 3) == [0, 1]
    picked = evenly_spaced(29000, 3000)
    assert len(picked) == 3000 and picked[-1] >= 28990 and picked == sorted(set(picked))


# ---------------------------------------------------------------------------------------------
# Where it is used


def test_a_trained_run_keeps_an_identifier_of_its_two_languages(varied_run):
    identifier = identifier_in(varied_run)
    assert identifier is not None and identifier.languages == ["en", "de"]
    for language in ("en", "de"):
        lines = (BUNDLED / f"test.{language}").read_text(encoding="utf-8").splitlines()[:200]
        right = sum(identifier.identify(line).language == language for line in lines)
        assert right >= 196, (language, right)


def test_detect_prints_language_and_confidence_per_line(varied_run):
    result = invoke("detect", "--model", varied_run, input="A man is walking.\n\nEin Mann geht.\n")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == ["en", "en", "de"] and rows[1][1] == "0.0"
    assert all(0 <= float(row[1]) <= 100 for row in rows)


def test_detect_mistakes_are_one_line(varied_run, tmp_path):
    assert_one_line_error(invoke("detect", "--model", tmp_path / "none"), 2, "not a directory")
    assert_one_line_error(invoke("detect", "--model", tmp_path), 2, "no language identifier")


def test_a_damaged_identifier_stops_detection_not_translation(varied_run, tmp_path):
    from tinytrans.translate import Translator
    copy = tmp_path / "run"
    copy.mkdir()
    for path in varied_run.iterdir():
        (copy / path.name).symlink_to(path)
    (copy / LANGID_FILE).unlink()
    (copy / LANGID_FILE).write_text("{", encoding="utf-8")
    translator = Translator(copy, precision="fp32", device="cpu")  # loads: no detection asked
    assert next(iter(translator.translate(["A man."], SearchConfig(beam=1)))).text
    with pytest.raises(UserError, match="unreadable"):
        translator.detect(["A man."])


def test_the_api_detects(varied_run):
    model = tinytrans.load(varied_run, precision="fp32")
    found = model.detect(["A man is walking.", "Ein Mann geht mit dem Hund."])
    assert [language for language, _ in found] == ["en", "de"]
    with pytest.raises(UserError, match="texts: expected a list"):
        model.detect("A man.")
