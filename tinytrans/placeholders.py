"""Text the model must not change: URLs, e-mail addresses, numbers and program variables come out
of a translation byte for byte as they went in.

Each such span of a line is replaced, before the line is encoded, by a stand-in: a number of two
digits or more (10, 11, ...), one per span, which no other part of the masked line can contain
(every number in it is masked). A translation model copies numbers, so the translation usually
holds each stand-in, which is then replaced by the span it stood for. The model never sees the
span itself, so it cannot translate "{name}", reformat "1,000.5" or break a URL into words.

A stand-in the translation lost (or turned into a word) is put back where the word alignment
says its source word went (beside the target word linked to it), or, without an alignment, at
the same relative position; a stand-in the translation repeated is kept once. Either way every
span appears exactly once in each translation. Spans are whole whitespace words or parts of one
(never several words), so an alignment keeps its word indices, but for a stand-in put back,
which shifts the words after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Alignment = list[tuple[int, int]]  # (source word, target word) pairs

_URL = r"(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]"
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_VARIABLE = r"\{[A-Za-z_][A-Za-z0-9_.]*\}|\$\{[A-Za-z_][A-Za-z0-9_]*\}|%(?:\([A-Za-z_]\w*\))?[sdif]"
# digits with their separators (1,000.50 / 1.000,50 / 10'000), not inside a word (A4, 3rd,
# COVID-19); a sign only where it stands alone (-5)
_NUMBER = r"(?<![\w.,+-])[-+]?\d+(?:[.,']\d+)*(?![\w])"
# a span glued to letters ("Hello{name}", "v10") is left: its stand-in would be glued too
PROTECTED = re.compile(r"(?<!\w)(?:" + "|".join(f"(?:{p})" for p in (_URL, _EMAIL, _VARIABLE,
                                                                       _NUMBER)) + r")(?!\w)")
# a number standing alone, as a stand-in is written (not "10am", "v10", "1.10")
STANDING_NUMBER = re.compile(r"(?<![\w.,])\d+(?![\w])")
FIRST_STAND_IN = 10


@dataclass(frozen=True)
class Masked:
    """A line with its protected spans replaced by stand-ins, and how to put them back."""

    text: str  # what the model translates
    spans: tuple[str, ...]  # the k-th span stood in for by str(FIRST_STAND_IN + k)
    words: tuple[int, ...]  # the masked text's word index of each stand-in

    def restore(self, translation: str, alignment: Alignment | None = None
                ) -> tuple[str, Alignment | None]:
        """The translation with each stand-in replaced by its span, exactly once each: in one
        pass over the translation as the model wrote it (a span put back is never read as a
        stand-in), then the lost ones put back."""
        if not self.spans:
            return translation, alignment
        seen: set[int] = set()

        def put_back(match: re.Match) -> str:
            k = int(match.group()) - FIRST_STAND_IN
            if not 0 <= k < len(self.spans):
                return match.group()  # a number of the model's own
            if k in seen:
                return ""  # a repeated stand-in: kept once
            seen.add(k)
            return self.spans[k]
        words = [STANDING_NUMBER.sub(put_back, word) for word in translation.split()]
        kept = [i for i, word in enumerate(words) if word]
        if len(kept) < len(words):
            new_index = {old: new for new, old in enumerate(kept)}
            words = [words[i] for i in kept]
            if alignment is not None:
                alignment = [(s, new_index[t]) for s, t in alignment if t in new_index]
        for k, span in enumerate(self.spans):
            if k in seen:
                continue
            where = self._target_of(k, len(words), alignment)
            words.insert(where, span)
            if alignment is not None:
                alignment = sorted([(s, t + 1 if t >= where else t) for s, t in alignment]
                                   + [(self.words[k], where)], key=lambda pair: pair[1])
        return " ".join(words), alignment

    def _target_of(self, k: int, n_target: int, alignment: Alignment | None) -> int:
        """Where a lost stand-in goes: after the target word its source word, or failing that
        the word before it, is linked to; else at its relative place."""
        source = self.words[k]
        if alignment is not None:
            for word in (source, source - 1):
                linked = [t for s, t in alignment if s == word]
                if linked:
                    return min(linked) + (0 if word == source else 1)
        n_source = max(len(self.text.split()), 1)
        return min(n_target, round(source * n_target / n_source))


def mask_like(masked: Masked, text: str) -> str | None:
    """Target text given with a line (a constraint, a prefix) with the line's spans replaced by
    their stand-ins, in one pass and found as mask finds them, so that what it asks for is what
    the model writes (restore puts them back). None when it holds a span the line has not: its
    number would be read as a stand-in; such a line is translated unmasked."""
    stand_ins = {span: str(FIRST_STAND_IN + k) for k, span in enumerate(masked.spans)}
    foreign = [m.group() for m in PROTECTED.finditer(text) if m.group() not in stand_ins]
    if foreign:
        return None
    return PROTECTED.sub(lambda m: stand_ins[m.group()], text)


def mask(text: str) -> Masked:
    """`text` with every protected span replaced by its stand-in."""
    spans: list[str] = []
    pieces: list[str] = []
    position = 0
    for match in PROTECTED.finditer(text):
        pieces += [text[position: match.start()], str(FIRST_STAND_IN + len(spans))]
        spans.append(match.group())
        position = match.end()
    if not spans:
        return Masked(text, (), ())
    masked = "".join(pieces) + text[position:]
    words = masked.split()
    indices = []
    for k in range(len(spans)):
        stand_in = str(FIRST_STAND_IN + k)
        indices.append(next(i for i, word in enumerate(words)
                            if stand_in in STANDING_NUMBER.findall(word)))
    return Masked(masked, tuple(spans), tuple(indices))
