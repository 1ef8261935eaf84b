"""Many directions in one model: which a run trains, where their text is, and how one is chosen.

A multilingual run (Johnson et al., 2017) is one encoder-decoder for every direction it trains:
the source of each pair begins with a token naming the target language, `<2de>`, and otherwise
nothing changes (one joint vocabulary, one model, one loss). The tokens are SentencePiece control
symbols: they have ids of their own, text never encodes to them (a line that says "<2fr>" cannot
change its target) and decoding leaves them out.

    --directions en-de,de-en,en-fr,fr-en   the directions trained (data.directions)
    --train PREFIX                          multi-way: PREFIX.LANG for every language named
    --train A:en-de --train B:en-fr         bilingual corpora, each for its pair both ways

Directions are sampled with a temperature over their sizes (Arivazhagan et al., 2019): direction
d's share of an epoch is proportional to (n_d / N)^(1/T). T = 1 keeps the corpus as it is, a large
T makes every direction equal; T = 5, the usual choice, lifts a small pair without repeating it
so often that it is learnt by heart. Equal directions (a multi-way corpus) are left as they are.

When a model is used, each line goes one way (a `Route`): a trained direction, or, for a pair it
was not trained on, through a pivot language both halves were trained with (de -> en -> fr), or
straight there when asked (zero-shot: the tag alone, rarely good).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tinytrans.errors import UserError

# A language code in a direction: letters, digits and _, since "-" joins the two of a direction
DIRECTION_LANGUAGE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}")
DEFAULT_TEMPERATURE = 5.0


@dataclass(frozen=True, order=True)
class Direction:
    src: str
    tgt: str

    @property
    def name(self) -> str:
        return f"{self.src}-{self.tgt}"

    def __str__(self) -> str:
        return self.name


def tag_piece(language: str) -> str:
    """The control symbol at the start of a source that asks for `language`."""
    return f"<2{language}>"


def parse_direction(text: str, where: str) -> Direction:
    parts = text.strip().split("-")
    if len(parts) != 2 or not all(DIRECTION_LANGUAGE.fullmatch(p) for p in parts):
        raise UserError(f"{where}: '{text.strip()}' is not a direction such as en-de (two language "
                        "codes of letters, digits and _, joined by -)")
    if parts[0] == parts[1]:
        raise UserError(f"{where}: '{text.strip()}' translates a language into itself")
    return Direction(parts[0], parts[1])


def parse_directions(text: str, where: str = "--directions") -> tuple[Direction, ...]:
    """"en-de,de-en" -> (Direction(en, de), Direction(de, en)); each at most once."""
    found = [parse_direction(part, where) for part in text.split(",") if part.strip()]
    if not found:
        raise UserError(f"{where}: names no direction; give them as en-de,de-en,...")
    repeated = [d.name for i, d in enumerate(found) if d in found[:i]]
    if repeated:
        raise UserError(f"{where}: {repeated[0]} is named twice")
    return tuple(found)


def languages_of(directions: tuple[Direction, ...]) -> list[str]:
    """Every language of the directions, in the order they first appear."""
    return list(dict.fromkeys(lang for d in directions for lang in (d.src, d.tgt)))


def names(directions: tuple[Direction, ...]) -> str:
    return ", ".join(d.name for d in directions)


# ---------------------------------------------------------------------------------------------
# Where each direction's text is

def direction_corpora(train: str, directions: tuple[Direction, ...],
                      flag: str = "--train") -> dict[Direction, str]:
    """The corpus prefix each direction reads its pairs from (PREFIX.SRC, PREFIX.TGT).

    `train` is one prefix (a multi-way corpus: every direction reads it), or bilingual corpora
    as PREFIX:SRC-TGT entries joined by commas, each giving its pair both ways. A direction no
    corpus has is an error naming it."""
    entries = [entry.strip() for entry in train.split(",") if entry.strip()]
    if len(entries) == 1 and not has_pair(entries[0]):
        return {d: entries[0] for d in directions}
    corpora: dict[frozenset, str] = {}
    for entry in entries:
        if not has_pair(entry):
            raise UserError(f"{flag} {entry}: several corpora each need their pair, as "
                            "PREFIX:en-de")
        prefix, pair = entry.rsplit(":", 1)
        direction = parse_direction(pair, f"{flag} {entry}")
        key = frozenset((direction.src, direction.tgt))
        if key in corpora:
            raise UserError(f"{flag} {entry}: a second corpus for {direction.src} and "
                            f"{direction.tgt}; join them into one")
        corpora[key] = prefix
    found = {}
    for d in directions:
        prefix = corpora.get(frozenset((d.src, d.tgt)))
        if prefix is None:
            raise UserError(f"--directions {d.name}: no {flag} corpus has {d.src} and {d.tgt} "
                            "(give one as PREFIX:" + d.name + ")")
        found[d] = prefix
    return found


def has_pair(entry: str) -> bool:
    """An entry of data.train of the form PREFIX:SRC-TGT."""
    if ":" not in entry:
        return False
    pair = entry.rsplit(":", 1)[1].strip().split("-")
    return len(pair) == 2 and all(DIRECTION_LANGUAGE.fullmatch(code) for code in pair)


# ---------------------------------------------------------------------------------------------
# Temperature sampling

def temperature_shares(sizes: list[int], temperature: float) -> np.ndarray:
    """Each direction's share of an epoch: (n_d / N)^(1/T), normalised."""
    sizes_array = np.asarray(sizes, dtype=np.float64)
    weights = (sizes_array / sizes_array.sum()) ** (1.0 / temperature)
    return weights / weights.sum()


def epoch_sample(sizes: list[int], temperature: float, seed: int, epoch: int) -> np.ndarray | None:
    """The pairs of epoch `epoch`, as indices into the directions' pairs laid end to end (sizes
    in that order): as many pairs as there are in all, each direction's share drawn by
    temperature_shares. A direction drawn less than its size gives a different subset each
    epoch; drawn more, all of it as often as fits and a random rest. None: every pair once (the
    shares equal the sizes)."""
    total = sum(sizes)
    wanted = np.rint(temperature_shares(sizes, temperature) * total).astype(np.int64)
    if np.array_equal(wanted, np.asarray(sizes)):
        return None
    rng = np.random.default_rng([seed, epoch, 7])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    picked = []
    for start, size, count in zip(starts, sizes, wanted):
        whole, rest = divmod(int(count), size)
        picked += [np.arange(start, start + size)] * whole
        picked.append(start + rng.choice(size, rest, replace=False))
    return np.concatenate(picked)


# ---------------------------------------------------------------------------------------------
# Choosing the way for a line

@dataclass(frozen=True)
class Route:
    """How one line goes from its language to the one asked for: `steps` directions, each with
    the tag its source starts with (none for a bilingual model). No step: the line is already
    in the target language, and is its own translation."""

    src: str
    tgt: str
    steps: tuple[Direction, ...]


class Directions:
    """The directions a model was trained on, and the way to translate any pair it knows."""

    def __init__(self, trained: tuple[Direction, ...], tagged: bool):
        self.trained, self.tagged = trained, tagged
        self.languages = languages_of(trained)

    def targets_of(self, src: str) -> list[str]:
        """The languages a line in `src` can be translated into: trained, or through a pivot."""
        return [tgt for tgt in self.languages if tgt != src and self.steps(src, tgt, False)]

    def sources_for(self, tgt: str, zero_shot: bool = False) -> list[str]:
        """The languages a line can be in to be translated into `tgt` (`tgt` itself included):
        what detection chooses among."""
        return [src for src in self.languages if src == tgt or self.steps(src, tgt, zero_shot)]

    def steps(self, src: str, tgt: str, zero_shot: bool) -> tuple[Direction, ...] | None:
        direct = Direction(src, tgt)
        if direct in self.trained or (zero_shot and self.tagged and src in self.languages
                                      and tgt in self.languages):
            return (direct,)
        for pivot in self.languages:
            first, second = Direction(src, pivot), Direction(pivot, tgt)
            if first in self.trained and second in self.trained:
                return (first, second)
        return None

    def route(self, src: str, tgt: str, zero_shot: bool = False, where: str = "") -> Route:
        """The Route from `src` to `tgt`; a pair the model cannot reach is a UserError that names
        the directions it has."""
        for flag, language in (("--tgt", tgt), ("--src", src)):
            if language not in self.languages:
                raise UserError(f"{where}{flag} {language}: the model knows "
                                f"{', '.join(self.languages)}")
        if src == tgt:
            return Route(src, tgt, ())
        steps = self.steps(src, tgt, zero_shot)
        if steps is None:
            hint = "; add --zero-shot to translate straight there with the tag alone" \
                if self.tagged else ""
            raise UserError(f"{where}{src}-{tgt}: not a direction this model was trained on, nor "
                            f"reachable through one language (it has {names(self.trained)})"
                            f"{hint}")
        return Route(src, tgt, steps)

    def default_target(self) -> str | None:
        """The target when none is named: the only one the model has, else None."""
        targets = {d.tgt for d in self.trained}
        return next(iter(targets)) if len(targets) == 1 else None

    def default_source(self) -> str | None:
        sources = {d.src for d in self.trained}
        return next(iter(sources)) if len(sources) == 1 else None


def tag_id(tokenizer, language: str) -> int:
    """The id of `language`'s tag in `tokenizer` (a tokenizer.Tokenizer); a UserError when it has
    none (a tokenizer trained for other languages, or for one pair)."""
    piece = tag_piece(language)
    found = tokenizer.sp.piece_to_id(piece)
    if not tokenizer.sp.is_control(found) or tokenizer.sp.id_to_piece(found) != piece:
        raise UserError(f"{tokenizer.name}: has no tag {piece} for the target language "
                        f"'{language}': it was trained for other languages (train the run "
                        "with its own tokenizer)")
    return found
