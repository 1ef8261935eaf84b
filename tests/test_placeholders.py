"""URLs, e-mail addresses, numbers and variables kept byte for byte (placeholders.py): masked
with stand-ins the model copies, put back exactly once whatever the translation did."""

from __future__ import annotations

import pytest

from tinytrans.placeholders import FIRST_STAND_IN, mask, mask_like

SPANS = ["https://example.org/a?b=1&c=2", "me@example.de", "1,000.50", "{name}", "%s",
         "%(count)d", "${HOME}", "-5", "10'000"]


def test_every_kind_of_span_is_masked_and_nothing_else():
    text = ("See https://example.org/a?b=1&c=2. Mail me@example.de: pay 1,000.50 to {name} "
            "via %s, %(count)d times in ${HOME}, -5 or 10'000 on A4 paper, the 3rd v10.")
    masked = mask(text)
    assert list(masked.spans) == SPANS
    assert "A4" in masked.text and "3rd" in masked.text and "v10" in masked.text
    for k, span in enumerate(SPANS):
        assert span not in masked.text and str(FIRST_STAND_IN + k) in masked.text
    assert masked.restore(masked.text) == (text, None)


def test_glued_spans_and_sentence_ends_are_left_alone():
    assert mask("Hello{name} and x@y").spans == ()
    masked = mask("Go to www.example.org.")
    assert masked.spans == ("www.example.org",) and masked.text == "Go to 10."


def test_a_lost_stand_in_goes_where_its_source_word_was_aligned():
    masked = mask("call 555 now")  # "call 10 now"
    text, pairs = masked.restore("ruf jetzt an", [(0, 0), (2, 1)])
    assert text == "ruf 555 jetzt an"  # after the target of the word before it
    assert pairs == [(0, 0), (1, 1), (2, 2)]
    # a span put back is never read as a stand-in: "I have 11 apples and 3 pears"
    masked = mask("I have 11 apples and 3 pears")  # "I have 10 apples and 11 pears"
    assert masked.restore("Ich habe 10 Äpfel und 11 Birnen")[0] == \
        "Ich habe 11 Äpfel und 3 Birnen"
    # a number glued to letters is neither masked nor taken for a stand-in
    masked = mask("Open 10am, call 555")
    assert masked.spans == ("555",) and masked.restore("Offen 10am, ruf 10 an")[0] == \
        "Offen 10am, ruf 555 an"
    assert mask("COVID-19 and A-4").spans == ()
    assert mask("call 555 now").restore("ruf jetzt an")[0] == "ruf 555 jetzt an"  # relative


def test_target_text_asks_for_the_spans_as_their_stand_ins():
    masked = mask("Pay 1,000.50 to {name} now")
    assert mask_like(masked, "{name} zahlt 1,000.50") == "11 zahlt 10"
    assert mask_like(masked, "Sie zahlt") == "Sie zahlt"  # other text stays
    assert mask_like(masked, "5.5 Euro") is None  # a span of its own: the line goes unmasked
    swapped = mask("see 11 and 10")  # spans 11 and 10 stand in as 10 and 11: in one pass
    assert mask_like(swapped, "siehe 11 und 10") == "siehe 10 und 11"
    assert masked.restore(mask_like(masked, "{name} zahlt 1,000.50"))[0] == "{name} zahlt 1,000.50"


def test_a_repeated_stand_in_is_kept_once_and_the_alignment_follows():
    masked = mask("pay 25 now")
    text, pairs = masked.restore("zahl 10 10 jetzt", [(0, 0), (1, 1), (1, 2), (2, 3)])
    assert text == "zahl 25 jetzt" and pairs == [(0, 0), (1, 1), (2, 2)]


@pytest.fixture(scope="module")
def model(varied_run):
    import tinytrans
    return tinytrans.load(varied_run, device="cpu", precision="fp32", threads=1)


LINES = ["The man at https://example.org/a?b=1 sends 1,000.50 to me@example.de .",
         "Dear {name}, you have %(count)d new messages from 2 friends.",
         "Her brother believed that 42 old men played with 3 cats."]


def each_once(texts: list[str]) -> bool:
    return all(line_spans_once(text, line) for text, line in zip(texts, LINES))


def line_spans_once(text: str, line: str) -> bool:
    return all(text.count(span) == line.count(span) for span in mask(line).spans)


def test_spans_survive_beam_sampling_constraints_and_nbest(model):
    assert each_once(model.translate(LINES))
    assert each_once(model.translate(LINES, beam=1))
    nbest = model.translate(LINES, nbest=3)
    assert all(line_spans_once(text, line) for entries, line in zip(nbest, LINES)
               for _, text in entries)
    assert each_once(model.translate(LINES, sample="all", seed=3, temperature=1.5))
    # constraints and prefixes that hold a span ask for it (as its stand-in): once each
    constrained = model.translate(LINES, constraints=[["1,000.50"], ["Freunde"], ["42", "Katzen"]])
    assert each_once(constrained) and "Freunde" in constrained[1] and "Katzen" in constrained[2]
    # (the toy vocabulary has no digits, so a stand-in in a prefix comes out as ⁇ and its span
    # is put back beside it: still exactly once)
    prefixed = model.translate(LINES, prefixes=["Der Mann", "{name}", "42 alte"])
    assert each_once(prefixed) and prefixed[0].startswith("Der Mann")
    assert each_once(model.translate(LINES, glossary={"cats": "Katzen"}))
    pairs = model.translate(LINES, alignment=True)
    for (text, alignment), line in zip(pairs, LINES):
        assert line_spans_once(text, line)
        assert all(t < len(text.split()) and s < len(line.split()) for s, t in alignment)


def test_without_placeholders_the_model_sees_them(model):
    assert model.translate(LINES, placeholders=False) != model.translate(LINES)
