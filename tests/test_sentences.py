"""Splitting over-long lines into sentences and pieces that fit, and joining translations."""

from __future__ import annotations

import random

import pytest

from tinytrans.sentences import join_translations, split_sentences, split_to_fit


def collapsed(text: str) -> str:
    return " ".join(text.split())


def at_most_words(n: int):
    return lambda piece: len(piece.split()) <= n


def at_most_chars(n: int):
    return lambda piece: len(piece) <= n


# --- split_sentences -------------------------------------------------------------------------

@pytest.mark.parametrize("text, sentences", [
    ("One. Two.", ["One.", "Two."]),
    ("Stop! Go.", ["Stop!", "Go."]),
    ("Really? Yes.", ["Really?", "Yes."]),
    ("No boundary here", ["No boundary here"]),
    ("A last sentence.", ["A last sentence."]),
    ("It rains. 42 people came.", ["It rains.", "42 people came."]),
])
def test_splits_after_final_punctuation(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


@pytest.mark.parametrize("text, sentences", [
    ("Really?! Yes.", ["Really?!", "Yes."]),
    ("Wait... What?", ["Wait...", "What?"]),
    ("Wait… What?", ["Wait…", "What?"]),
    ("Wait... what now?", ["Wait... what now?"]),  # lowercase: the sentence goes on
])
def test_runs_of_terminators_and_ellipsis(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


@pytest.mark.parametrize("text, sentences", [
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("He said 'Stop!' Then he left.", ["He said 'Stop!'", "Then he left."]),
    ("Er sagte „Halt.“ Dann ging er.", ["Er sagte „Halt.“", "Dann ging er."]),
    ("Il dit « Non. » Puis il part.", ["Il dit « Non. » Puis il part."]),  # spaced: no split
    ("(See above.) Then go.", ["(See above.)", "Then go."]),
    ("It ended. (Or did it?) Yes.", ["It ended.", "(Or did it?)", "Yes."]),
    ('It ended. "Good," she said.', ["It ended.", '"Good," she said.']),
    ("¿Qué? ¡Nada!", ["¿Qué?", "¡Nada!"]),
])
def test_quotes_and_brackets(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


@pytest.mark.parametrize("text, sentences", [
    ("你好。我很好！你呢？", ["你好。", "我很好！", "你呢？"]),
    ("他说：“你好。”然后走了。", ["他说：“你好。”", "然后走了。"]),
    ("今日は晴れです。 明日は雨です。", ["今日は晴れです。", "明日は雨です。"]),
    ("I said hi. 你好。", ["I said hi.", "你好。"]),  # a letter of a script without case
    ("Он пришёл. Она ушла.", ["Он пришёл.", "Она ушла."]),
])
def test_cjk_and_other_scripts(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


@pytest.mark.parametrize("language, text", [
    ("en", "Mr. Smith and Mrs. Jones met Ms. Lee."),
    ("en", "Dr. Brown and Prof. Green live on Baker St. Down the road."),
    ("en", "John Smith Jr. Was there."),
    ("en", "Fruit, e.g. Apples, and i.e. Pears."),
    ("en", "Acme Inc. And Beta Ltd. And Gamma Co. Merged."),
    ("en", "Cats vs. Dogs, etc. Are fine."),
    ("en", "Item No. 5 arrived on Jan. 12 and Feb. 3."),
    ("de", "Obst, z.B. Äpfel, bzw. Birnen usw. Kosten Geld."),
    ("de", "Haus Nr. 7 in der Haupt Str. Neben dem d.h. Bahnhof u.a. Gebäuden."),
    ("de", "Das kostet ca. 5 Euro."),
    ("de", "Z.B. Äpfel schmecken."),
    ("fr", "M. Dupont, Mme. Martin et Mlle. Roux, p.ex. Chez nous."),
    ("cs", "Ovoce, např. Jablka, tj. Hrušky, atd. Stojí peníze."),
    ("cs", "Např. Jablka jsou zdravá."),
])
def test_abbreviations_do_not_end_a_sentence(language: str, text: str) -> None:
    assert split_sentences(text, language) == [text]
    assert split_sentences(text) == [text]  # None: every language's list


@pytest.mark.parametrize("language, text, sentences", [
    ("de", "Mr. Smith kam.", ["Mr.", "Smith kam."]),  # English titles are not German ones
    ("en", "Obst z.B. Äpfel.", ["Obst z.B.", "Äpfel."]),
    ("en", "Dr. Who. Prof. X.", ["Dr. Who.", "Prof. X."]),  # the common list holds everywhere
    ("xx", "Dr. Who. Mr. X.", ["Dr. Who.", "Mr.", "X."]),  # unknown code: the common list only
    ("de-AT", "Obst z.B. Äpfel.", ["Obst z.B. Äpfel."]),  # a region counts as its language
])
def test_abbreviations_follow_the_language(language: str, text: str,
                                           sentences: list[str]) -> None:
    assert split_sentences(text, language) == sentences


@pytest.mark.parametrize("text, sentences", [
    ("No. I won't go.", ["No.", "I won't go."]),
    ("See No. 5 now.", ["See No. 5 now."]),
    ("I met Jan. He waved.", ["I met Jan.", "He waved."]),
    ("Due Jan. 12 at noon.", ["Due Jan. 12 at noon."]),
])
def test_word_like_abbreviations_hold_only_before_a_number(text: str,
                                                          sentences: list[str]) -> None:
    assert split_sentences(text, "en") == sentences


@pytest.mark.parametrize("text", [
    "J. R. R. Tolkien wrote it.",
    "The U.S. Army came.",
    "George W. Bush spoke.",
    'He read "J. K. Rowling" books.',
])
def test_initials_do_not_end_a_sentence(text: str) -> None:
    assert split_sentences(text) == [text]


@pytest.mark.parametrize("text", [
    "It costs 3.5 Euros at 10.30 Today.",
    "Version 2.0.1 Is out.",
    "See example.com For more.",
])
def test_periods_without_a_following_space_do_not_split(text: str) -> None:
    assert split_sentences(text) == [text]


@pytest.mark.parametrize("language, text, sentences", [
    ("de", "Er kam am 3. Oktober an.", ["Er kam am 3. Oktober an."]),
    ("de", "Der 12. Mann spielt.", ["Der 12. Mann spielt."]),
    ("cs", "Přijel 5. Května.", ["Přijel 5. Května."]),
    ("de", "Es waren 100. Dann mehr.", ["Es waren 100.", "Dann mehr."]),  # three digits
    ("en", "I am 25. I live here.", ["I am 25.", "I live here."]),
    (None, "I am 25. I live here.", ["I am 25.", "I live here."]),
])
def test_ordinals_only_in_german_and_czech(language: str | None, text: str,
                                           sentences: list[str]) -> None:
    assert split_sentences(text, language) == sentences


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n"])
def test_empty_or_blank_text_has_no_sentences(text: str) -> None:
    assert split_sentences(text) == []


def test_whitespace_between_sentences_is_dropped_and_inside_kept() -> None:
    text = "  One  two.\n\n\tThree four.  "
    assert split_sentences(text) == ["One  two.", "Three four."]


PLAIN = ["cat", "sat", "on", "mat", "near", "river", "with", "kilos", "today", "Paris"]
# Phrases that hold a period which must not end a sentence; none is put at a sentence's end.
PHRASES = PLAIN + ["Dr. Brown", "the U.S. Army", "3.5 kilos", "at 10.30", "e.g. Paris",
                   "J. R. R. Tolkien", "Mr. Smith", "No. 5"]
ENDINGS = [".", "!", "?", "?!", "...", '."', ".)"]
GAPS = [" ", "  ", "\n", "\t", " \n "]


def generated_sentence(rng: random.Random, length: int) -> str:
    """`length` words ending in a plain word and a terminator, the first letter capitalised."""
    words: list[str] = []
    while len(words) < length - 1:
        phrase = rng.choice(PHRASES).split()
        if len(words) + len(phrase) <= length - 1:
            words += phrase
    words.append(rng.choice(PLAIN))
    words[0] = words[0][:1].upper() + words[0][1:]
    return " ".join(words) + rng.choice(ENDINGS)


def generated_text(n_words: int, seed: int = 0) -> tuple[str, int]:
    """A text of exactly n_words words in sentences of 1-15 words, and its sentence count."""
    rng = random.Random(seed)
    sentences: list[str] = []
    words_left = n_words
    while words_left:
        length = min(rng.randint(1, 15), words_left)
        sentences.append(generated_sentence(rng, length))
        words_left -= length
    text = "".join(sentence + rng.choice(GAPS) for sentence in sentences)
    return text, len(sentences)


def test_generated_text_has_the_words_asked_for() -> None:
    assert len(generated_text(2000)[0].split()) == 2000


@pytest.mark.parametrize("language", [None, "en"])
def test_generated_text_splits_into_its_sentences_and_loses_nothing(
        language: str | None) -> None:
    text, count = generated_text(2000)
    sentences = split_sentences(text, language)
    assert len(sentences) == count
    assert " ".join(sentences) == collapsed(text)


# --- split_to_fit ----------------------------------------------------------------------------

def test_sentences_that_fit_are_not_merged() -> None:
    assert split_to_fit("A b. C d. E f.", lambda piece: True) == ["A b.", "C d.", "E f."]


@pytest.mark.parametrize("max_words, pieces", [
    (6, ["one two three, four five six;", "seven eight"]),
    (3, ["one two three,", "four five six;", "seven eight"]),
    (2, ["one two", "three,", "four five", "six;", "seven eight"]),
])
def test_long_sentence_is_cut_at_clauses_then_words(max_words: int, pieces: list[str]) -> None:
    text = "one two three, four five six; seven eight"
    assert split_to_fit(text, at_most_words(max_words)) == pieces


def test_clauses_are_not_cut_inside_numbers() -> None:
    text = "It cost 1,000 dollars at 10:30, then more."
    assert split_to_fit(text, at_most_words(5)) == ["It cost 1,000 dollars at", "10:30,",
                                                    "then more."]


@pytest.mark.parametrize("text, pieces", [
    ("aaa—bbb—ccc", ["aaa—", "bbb—", "ccc"]),
    ("一二三，四五六、七八九", ["一二三，", "四五六、", "七八九"]),
])
def test_dashes_and_full_width_commas_cut_without_a_space(text: str, pieces: list[str]) -> None:
    assert split_to_fit(text, at_most_chars(4)) == pieces


@pytest.mark.parametrize("max_words", [1, 2, 3, 5, 8, 50])
def test_every_piece_fits_and_the_words_come_back_in_order(max_words: int) -> None:
    text, _ = generated_text(300, seed=max_words)
    pieces = split_to_fit(text, at_most_words(max_words))
    assert all(len(piece.split()) <= max_words for piece in pieces)
    assert " ".join(pieces).split() == text.split()
    assert all(piece and piece == piece.strip() for piece in pieces)


def test_a_word_without_spaces_falls_back_to_character_runs() -> None:
    word = "x" * 5000
    pieces = split_to_fit(word, at_most_chars(10))
    assert len(pieces) == 500
    assert all(len(piece) <= 10 for piece in pieces)
    assert "".join(pieces) == word


def test_character_runs_only_for_the_word_that_needs_them() -> None:
    text = "Short one. " + "y" * 25 + " tail."
    assert split_to_fit(text, at_most_chars(10)) == ["Short one.", "y" * 10, "y" * 10,
                                                     "y" * 5, "tail."]


def test_accents_stay_with_their_letter() -> None:
    text = "e\u0301" * 3  # é as e + a combining acute accent
    assert split_to_fit(text, at_most_chars(2)) == ["e\u0301"] * 3


@pytest.mark.parametrize("text", ["Ab cd.", "x", "Hi, you. 你好。", "a  \n b"])
def test_nothing_fits_gives_single_characters_and_still_ends(text: str) -> None:
    pieces = split_to_fit(text, lambda piece: False)
    assert pieces == list("".join(text.split()))


def test_fits_sees_exactly_the_pieces_and_never_an_empty_string() -> None:
    seen: list[str] = []

    def fits(piece: str) -> bool:
        seen.append(piece)
        return len(piece) <= 12

    pieces = split_to_fit("First, a clause; then more words. " + "z" * 30 + " End!", fits)
    assert "" not in seen
    assert set(pieces) <= set(seen)
    assert all(len(piece) <= 12 for piece in pieces)


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_split_to_fit_of_blank_text_is_empty(text: str) -> None:
    assert split_to_fit(text, lambda piece: True) == []


def test_split_to_fit_respects_the_language() -> None:
    text = "Er kam am 3. Oktober an. Dann ging er."
    assert split_to_fit(text, lambda piece: True, "de") == ["Er kam am 3. Oktober an.",
                                                             "Dann ging er."]


# --- join_translations -----------------------------------------------------------------------

@pytest.mark.parametrize("parts, line", [
    (["A.", "B."], "A. B."),
    (["A.", "", "B."], "A. B."),
    (["", "A.", "  ", "B.", ""], "A. B."),
    (["  A. ", " B. "], "A. B."),
    ([], ""),
    (["", " "], ""),
])
def test_join_uses_single_spaces_and_skips_empty_parts(parts: list[str], line: str) -> None:
    assert join_translations(parts) == line


@pytest.mark.parametrize("parts, line", [
    (["a\nb", "c\td"], "a b c d"),
    (["a \r\n b", "c\n"], "a b c"),
    (["a\u2028b\x85c\vd\fe"], "a b c d e"),
    (["\n", "A."], "A."),
])
def test_join_leaves_no_line_break_or_tab(parts: list[str], line: str) -> None:
    joined = join_translations(parts)
    assert joined == line
    assert joined.splitlines() == [joined] and "\t" not in joined


def test_join_keeps_other_whitespace_inside_a_part() -> None:
    assert join_translations(["Quoi\u00a0?", "Non."]) == "Quoi\u00a0? Non."


def test_split_then_join_gives_back_the_collapsed_line() -> None:
    text, _ = generated_text(200, seed=3)
    assert join_translations(split_sentences(text)) == collapsed(text)
