"""What the translator does with a line besides searching it, on a trained toy run: long lines
split into sentences and joined back, constraints and glossaries, word alignments, sampling.
Each front end (translate, evaluate, the API) goes through translate.Translator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tinytrans.config import SearchConfig
from tinytrans.errors import UserError
from tinytrans.sentences import split_sentences
from tinytrans.terminology import Glossary
from tinytrans.translate import LineOptions, Translator
from toyrun import BUNDLED

LINES = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:12]
TARGET_WORDS = [w.strip(".,!?") for line in (BUNDLED / "test.de").read_text(encoding="utf-8")
                .splitlines()[:40] for w in line.split()]
ALIGNMENT = re.compile(r"^(\d+-\d+)( \d+-\d+)*$")


@pytest.fixture(scope="module")
def translator(varied_run: Path) -> Translator:
    return Translator(varied_run, precision="fp32", device="cpu")


def texts(translator: Translator, lines: list[str], cfg: SearchConfig = SearchConfig(beam=3),
          **kwargs) -> list[str]:
    return [t.text for t in translator.translate(lines, cfg, **kwargs)]


# ---------------------------------------------------------------------------------------------
# Documents: long lines


def long_document(sentences: int) -> str:
    """A line of `sentences` distinct sentences from the test set (about 10 words each)."""
    return " ".join(LINES[i % len(LINES)].rstrip(".?!") + f" {i}." for i in range(sentences))


def test_a_line_too_long_for_the_model_comes_back_whole_in_one_line(translator):
    line = long_document(240)  # about 2,000 words
    assert len(line.split()) > 2000
    assert len(translator.src_tok.encode([line])[0]) > translator.max_source_pieces
    warnings = []
    # the sentences are numbered: without placeholders, whose stand-ins count per line, a
    # sentence is the same model input within the line and alone
    unmasked = LineOptions(placeholders=False)
    [result] = translator.translate([line], SearchConfig(beam=1), warn=warnings.append,
                                    options=unmasked)
    assert "\n" not in result.text and not warnings
    parts = [s for s in split_sentences(line)]
    assert len(parts) == 240
    alone = texts(translator, parts, SearchConfig(beam=1), options=unmasked)
    # in order, nothing dropped: the line's translation is its sentences' translations, joined
    assert result.text == " ".join(t for t in alone if t)


def test_a_line_with_a_prefix_stays_whole_and_one_too_long_gives_it_to_its_first_sentence(
        translator):
    paragraph = f"{LINES[0]} {LINES[1]}"
    [whole] = translator.translate([paragraph], SearchConfig(beam=3), prefixes=["Ein"])
    assert whole.text.startswith("Ein ")
    assert whole.text != texts(translator, [paragraph])[0]  # not split: searched as one line
    line, warnings = long_document(240), []
    [result] = translator.translate([line], SearchConfig(beam=1), warn=warnings.append,
                                    prefixes=["Zwei Hunde"])
    assert result.text.startswith("Zwei Hunde")
    assert any("its prefix go with the first" in w for w in warnings)


def test_a_prefix_ending_with_a_space_finishes_its_last_word(translator):
    from tinytrans.terminology import check_prefix
    assert check_prefix("Ein  Mann ", "p") == "Ein Mann " and check_prefix(" Ein", "p") == "Ein"
    assert check_prefix("   ", "p") == ""
    line = "A man."
    [segment] = translator.segments(0, 1, line, translator.source_ids([line])[0], [],
                                    LineOptions(), lambda m: None, "Ein ")
    assert segment.prefix_ends_word and segment.prefix == tuple(translator.tgt_tok.encode(["Ein"])[0])
    starts = translator.word_starts
    assert starts.sum() > 0 and bool(starts[3])  # EOS may follow a finished word
    [result] = translator.translate([line], SearchConfig(beam=3), prefixes=["Ein "])
    assert result.text.startswith("Ein ")


def test_a_prefix_on_an_empty_line_is_said_unused_and_glossary_terms_keep_it(translator):
    warnings = []
    out = [t.text for t in translator.translate(["", LINES[0]], SearchConfig(beam=3),
                                                 warn=warnings.append, prefixes=["Ein", ""])]
    assert out[0] == "" and any("line 1: empty" in w for w in warnings)
    glossary = Glossary.from_pairs({"man": "Kerl"})
    [result] = translator.translate([LINES[0]], SearchConfig(beam=4), prefixes=["Zwei"],
                                    options=LineOptions(glossary=glossary))
    assert result.text.startswith("Zwei")  # the term is searched for, not placed over it
    assert "man" not in LINES[0] or "Kerl" in result.text


def test_splitting_can_be_turned_off_and_then_the_line_is_cut(translator):
    line = long_document(240)
    warnings = []
    translator.translate([line], SearchConfig(beam=1), warn=warnings.append,
                         options=LineOptions(split_sentences=False)).__next__()
    assert any("truncated" in w for w in warnings)


def test_every_line_is_translated_sentence_by_sentence_by_default(translator):
    """A paragraph that fits the model is still split: each sentence as if alone, joined."""
    line = f"{LINES[0]} {LINES[1]}"
    split = texts(translator, [line])[0]
    assert split == " ".join(texts(translator, LINES[:2]))
    assert texts(translator, [line], options=LineOptions(split_sentences=True))[0] == split


def test_without_splitting_a_line_that_fits_is_translated_whole(translator):
    line = f"{LINES[0]} {LINES[1]}"
    cfg = SearchConfig(beam=3)  # the same search both ways
    whole = texts(translator, [line], cfg, options=LineOptions(split_sentences=False))[0]
    forced = translator.translate_batch([translator.source_ids([line])[0]], cfg)
    assert whole == translator.tgt_tok.decode([forced[0][0].tokens])[0]


# ---------------------------------------------------------------------------------------------
# Constraints


def test_no_constraints_change_nothing(translator):
    plain = texts(translator, LINES)
    assert texts(translator, LINES, constraints=[[] for _ in LINES]) == plain
    assert texts(translator, LINES, options=LineOptions(glossary=Glossary.from_pairs({}))) == plain


@pytest.mark.parametrize("beam", [1, 4])
def test_every_constraint_appears_in_the_translation(translator, beam: int):
    import random
    chooser = random.Random(beam)
    phrases = [chooser.sample(TARGET_WORDS, k=chooser.randint(1, 2)) for _ in LINES]
    phrases[3] = ["Fahrradhelm"]  # a word SentencePiece cuts into several pieces
    results = texts(translator, LINES, SearchConfig(beam=beam), constraints=phrases)
    for text, wanted in zip(results, phrases):
        for phrase in wanted:
            assert phrase in text, (phrase, text)


def test_constrained_batch_equals_lines_alone(translator):
    phrases = [["Haus"], [], ["Katze", "rot"], ["Mann"]]
    together = texts(translator, LINES[:4], constraints=phrases)
    alone = [texts(translator, [line], constraints=[p])[0] for line, p in zip(LINES, phrases)]
    assert together == alone


def test_glossary_terms_become_constraints_with_method_constrain(translator):
    glossary = Glossary.from_pairs({"man": "Fahrrad", "woman": "Apfel"})
    lines = ["A man is here.", "The woman sings.", "A dog runs."]
    results = texts(translator, lines, options=LineOptions(glossary=glossary,
                                                           glossary_method="constrain"))
    assert "Fahrrad" in results[0] and "Apfel" in results[1]
    assert results[2] == texts(translator, lines[2:])[0]


def test_glossary_terms_are_placed_and_the_rest_of_the_translation_kept(translator):
    """The default: the free translation, with the word aligned to the source term (the longest
    of them) replaced by the term, and every other word as the model wrote it."""
    glossary = Glossary.from_pairs({"man": "Drahtesel", "woman": "Apfel", "house": "Bude"})
    lines = LINES[:6] + ["A man is here.", "The woman sings.", "A dog runs."]
    plain = texts(translator, lines, options=LineOptions(alignment=True))
    placed = list(translator.translate(lines, SearchConfig(beam=3),
                                       options=LineOptions(glossary=glossary, alignment=True)))
    for line, before, after in zip(lines, plain, placed):
        targets = glossary.constraints_for(line)
        if not targets:
            assert after.text == before
            continue
        for target in targets:
            assert target in after.text.split(), (line, after.text)
        old, new = before.split(), after.text.split()
        assert len(new) == len(old) and sum(a != b for a, b in zip(old, new)) <= len(targets)
        assert all(t < len(new) for _, t in after.alignments[0])


def test_a_term_that_cannot_be_placed_is_searched_for_instead(translator, monkeypatch):
    monkeypatch.setattr("tinytrans.lines.place_terms", lambda *args: None)
    glossary = Glossary.from_pairs({"man": "Drahtesel"})
    placed = texts(translator, ["A man is here."], options=LineOptions(glossary=glossary))
    constrained = texts(translator, ["A man is here."],
                        options=LineOptions(glossary=glossary, glossary_method="constrain"))
    assert placed == constrained and "Drahtesel" in placed[0]


def test_a_line_with_constraints_that_fits_is_kept_whole(translator):
    """Its phrases belong to the whole line: split, they would all go to the first sentence."""
    line = f"{LINES[0]} {LINES[1]}"
    warnings = []
    result = next(translator.translate([line], SearchConfig(beam=3), warn=warnings.append,
                                       constraints=[["Haus"]]))
    whole = texts(translator, [line], options=LineOptions(split_sentences=False),
                  constraints=[["Haus"]])[0]
    assert result.text == whole and "Haus" in whole and warnings == []


def test_constraints_must_pair_with_the_lines(translator):
    with pytest.raises(UserError, match="none for input line 3"):
        list(translator.translate(LINES[:3], SearchConfig(), constraints=[["a"], []]))
    with pytest.raises(UserError, match="more lines than the 2 input lines"):
        list(translator.translate(LINES[:2], SearchConfig(), constraints=[["a"], [], []]))


def test_sampling_refuses_constraints(translator):
    with pytest.raises(UserError, match="--sample: constraints need beam search"):
        list(translator.translate(LINES[:2], SearchConfig(sample=0), constraints=[[], []]))


# ---------------------------------------------------------------------------------------------
# Alignments


def test_alignment_pairs_every_target_word_once_with_words_in_range(translator):
    lines = LINES + ["", f"{LINES[0]} {LINES[1]}"]
    results = list(translator.translate(lines, SearchConfig(beam=3, nbest=2),
                                        options=LineOptions(alignment=True)))
    for line, result in zip(lines, results):
        assert len(result.alignments) == max(len(result.nbest), 1)
        for (_, text), pairs in zip(result.nbest, result.alignments):
            assert [t for _, t in pairs] == list(range(len(text.split())))
            assert all(0 <= s < len(line.split()) for s, _ in pairs)
            formatted = " ".join(f"{s}-{t}" for s, t in pairs)
            assert formatted == "" or ALIGNMENT.match(formatted)


def test_alignment_of_a_split_line_counts_words_across_its_sentences(translator):
    line = f"{LINES[0]} {LINES[1]}"
    [joined] = translator.translate([line], SearchConfig(beam=2),
                                    options=LineOptions(split_sentences=True, alignment=True))
    first, second = translator.translate(LINES[:2], SearchConfig(beam=2),
                                         options=LineOptions(alignment=True))
    src_words, tgt_words = len(LINES[0].split()), len(first.text.split())
    expected = first.alignments[0] + [(s + src_words, t + tgt_words)
                                      for s, t in second.alignments[0]]
    assert joined.alignments[0] == expected


def test_alignment_leaves_the_translation_unchanged(translator):
    aligned = list(translator.translate(LINES, SearchConfig(beam=3),
                                        options=LineOptions(alignment=True)))
    assert [t.text for t in aligned] == texts(translator, LINES)


# ---------------------------------------------------------------------------------------------
# Sampling


def test_samples_are_reproducible_and_differ_across_seeds(translator):
    def samples(seed: int) -> list[list[str]]:
        cfg = SearchConfig(sample=0, nbest=3, seed=seed)
        return [[text for _, text in t.nbest] for t in translator.translate(LINES, cfg)]
    assert samples(1) == samples(1)
    assert samples(1) != samples(2)
    assert all(len(s) == 3 for s in samples(1))


def test_sampling_at_temperature_zero_is_greedy(translator):
    greedy = texts(translator, LINES, SearchConfig(beam=1))
    assert texts(translator, LINES, SearchConfig(sample=0, temperature=0.0)) == greedy
    assert texts(translator, LINES, SearchConfig(sample=1)) == greedy


def test_the_engine_contract_is_a_class_not_attributes_to_probe(translator):
    """An engine is a LineTranslator: it cannot be made without search_batch, and says with
    attention_shape, not with the attributes it happens to have, whether it shows attention."""
    from tinytrans.lines import AttentionShape, LineTranslator
    with pytest.raises(TypeError, match="search_batch"):
        LineTranslator(translator.src_tok, translator.tgt_tok, 128, "en", "de")
    model = translator.config.model
    assert translator.attention_shape() == AttentionShape(model.n_decoder_layers, model.n_heads)
