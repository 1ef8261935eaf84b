"""SentencePiece subword tokenizers: training and the text <-> ids step.

One joint vocabulary over both languages is the default, because tied source, target and output
embeddings need it; a tokenizer per language can be trained by running this twice. The four
reserved ids below are fixed here and nowhere else.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

from tinytrans.atomic import atomic_write_bytes, atomic_write_text
from tinytrans.config import MIN_VOCAB_SIZE, MODEL_TYPES, DataConfig
from tinytrans.directions import direction_corpora, languages_of, parse_directions, tag_piece
from tinytrans.errors import UserError
from tinytrans.textio import corpus_file, read_lines, read_parallel

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
    """A trained SentencePiece model: text to piece ids and back."""

    def __init__(self, model_proto: bytes, name: str = "<memory>"):
        self.name = name
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except Exception:  # sentencepiece raises a bare RuntimeError or OSError
            raise UserError(f"{name}: not a SentencePiece model") from None
        reserved = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if reserved != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise UserError(
                f"{name}: SentencePiece model has pad/unk/bos/eos ids {reserved}, tinytrans needs "
                f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; train it with 'tinytrans tokenizer train'"
            )

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        try:
            return cls(path.read_bytes(), str(path))
        except FileNotFoundError:
            raise UserError(f"{path}: no such tokenizer model") from None
        except IsADirectoryError:
            raise UserError(f"{path}: is a directory, not a tokenizer model") from None

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def pieces(self) -> list[str]:
        """Every piece, in id order: the vocabulary a model's embeddings are rows of."""
        return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]

    def encode(self, lines: list[str], sampling_alpha: float = 0.0) -> list[list[int]]:
        """Piece ids of each line, without BOS/EOS (the batcher adds those).

        With `sampling_alpha` > 0, a segmentation sampled for each line (see
        DataConfig.sampling_alpha), reproducible after `seed_sampling`.
        """
        if sampling_alpha == 0.0:
            return self.sp.encode(lines, out_type=int)
        # one thread: the samples then follow from the seed alone, in line order
        return self.sp.encode(lines, out_type=int, enable_sampling=True, alpha=sampling_alpha,
                              nbest_size=-1, num_threads=1)

    def encode_pieces(self, lines: list[str]) -> list[list[str]]:
        return self.sp.encode(lines, out_type=str)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode(ids)

    def decode_pieces(self, pieces: list[list[str]]) -> list[str]:
        return self.sp.decode_pieces(pieces)

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, self.model_proto)


def seed_sampling(seed: int) -> None:
    """Seed SentencePiece's generator (one for the whole process) for sampled segmentations."""
    spm.set_random_generator_seed(seed)


def train_tokenizer(
    inputs: list[Path],
    output_prefix: Path,
    vocab_size: int,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    max_sentences: int | None = None,
    seed: int = 1,
    utf8: str = "strict",
    lines: Iterator[str] | None = None,
    control_symbols: list[str] | None = None,
) -> Tokenizer:
    """Train a SentencePiece model on the lines of `inputs`; write PREFIX.model and PREFIX.vocab.

    With `max_sentences`, a uniform sample of that many lines (reservoir sampling, seeded) is used,
    so a huge corpus never has to fit in memory. `utf8` is the policy for invalid UTF-8 (see
    textio.read_lines). `lines`, when given, are the text to train on instead (`inputs` then
    only names it in errors); `control_symbols` get ids of their own that no text encodes to.
    """
    if model_type not in MODEL_TYPES:
        raise UserError(f"--model-type: '{model_type}' is not one of {', '.join(MODEL_TYPES)}")
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(f"--vocab-size: {vocab_size} is too small (at least {MIN_VOCAB_SIZE})")
    if not 0.9 <= character_coverage <= 1.0:
        raise UserError(f"--character-coverage: {character_coverage} must lie in [0.9, 1.0]")
    try:
        output_prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{output_prefix}: cannot create its directory ({error.strerror})") from None
    if lines is None:
        lines = _nonempty(_all_lines(inputs, utf8))
        if max_sentences is not None:
            lines = iter(reservoir_sample(lines, max_sentences, seed))
    proto = _train_proto(lines, vocab_size, model_type, character_coverage, inputs,
                         control_symbols or [])
    tokenizer = Tokenizer(proto, f"{output_prefix}.model")
    tokenizer.save(Path(f"{output_prefix}.model"))
    vocab = "".join(
        f"{tokenizer.sp.id_to_piece(i)}\t{tokenizer.sp.get_score(i):g}\n"
        for i in range(tokenizer.vocab_size)
    )
    atomic_write_text(Path(f"{output_prefix}.vocab"), vocab)
    return tokenizer


def _train_proto(
    lines: Iterator[str], vocab_size: int, model_type: str, coverage: float, inputs: list[Path],
    control_symbols: list[str],
) -> bytes:
    model = _CountingIterator(lines)
    writer = _BytesWriter()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=model,
            model_writer=writer,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=coverage,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            num_threads=2,
            max_sentence_length=1 << 16,
            **({"control_symbols": control_symbols} if control_symbols else {}),
            minloglevel=2,
        )
    except Exception as error:
        if model.error is not None:  # our own reading error, raised inside SentencePiece's loop
            raise model.error from None
        if model.count == 0:
            raise UserError(f"{', '.join(map(str, inputs))}: no non-empty lines to train on") from None
        reason = str(error).splitlines()[-1].split("] ")[-1]
        raise UserError(f"--vocab-size {vocab_size}: SentencePiece refused it: {reason}") from None
    return writer.data


def _all_lines(inputs: Iterable[Path], utf8: str) -> Iterator[str]:
    for path in inputs:
        yield from read_lines(path, utf8)


def _nonempty(lines: Iterable[str]) -> Iterator[str]:
    return (line for line in lines if line.strip())


def reservoir_sample(lines: Iterable[str], k: int, seed: int) -> list[str]:
    """A uniform random sample of k lines from a stream of unknown length (Algorithm R)."""
    if k < 1:
        raise UserError(f"--max-sentences: {k} must be at least 1")
    rng = random.Random(seed)
    sample: list[str] = []
    for n, line in enumerate(lines):
        if n < k:
            sample.append(line)
        else:
            j = rng.randrange(n + 1)
            if j < k:
                sample[j] = line
    return sample


class _CountingIterator:
    """Passes lines to SentencePiece while counting them, to tell 'empty input' from other errors."""

    def __init__(self, lines: Iterator[str]):
        self.lines, self.count = lines, 0
        self.error: UserError | None = None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            line = next(self.lines)
        except UserError as error:
            self.error = error
            raise
        self.count += 1
        return line


class _BytesWriter:
    """SentencePiece writes the trained model through an object with a write() method."""

    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


# ---------------------------------------------------------------------------------------------
# The tokenizers of a run or a prepared corpus

TOKENIZER_SAMPLE = 2_000_000  # lines: enough for a good vocabulary, bounded memory on huge corpora


def tokenizer_names(joint: bool) -> list[str]:
    """File names of the tokenizer model(s), the same in a data directory and a run directory."""
    return ["tokenizer.model"] if joint else ["tokenizer.src.model", "tokenizer.tgt.model"]


def make_tokenizers(data: DataConfig, paths: list[Path], seed: int) -> tuple[Tokenizer, Tokenizer]:
    """Copy `data.tokenizer` to `paths`, or train the tokenizer(s) there: (source, target).

    `paths` holds one file for a joint vocabulary, else the source's and the target's.
    """
    if data.tokenizer is not None:
        if not data.joint_vocab:
            raise UserError("data.tokenizer names one joint model; with data.joint_vocab = false "
                            "tinytrans trains one tokenizer per language itself")
        loaded = [Tokenizer.load(data.tokenizer)]
        loaded[0].save(paths[0])
    elif data.multilingual:
        loaded = [train_multilingual_tokenizer(data, paths[0], seed)]
    else:
        # Check the corpus as a parallel one first, so that its errors (unequal line counts,
        # invalid UTF-8) are reported as such rather than as a tokenizer training failure.
        for _ in read_parallel(data.train, data.src, data.tgt, data.utf8_errors):
            pass
        sides = [[corpus_file(data.train, data.src), corpus_file(data.train, data.tgt)]]
        if not data.joint_vocab:
            sides = [[sides[0][0]], [sides[0][1]]]
        loaded = [
            train_tokenizer(inputs, path.with_suffix(""), data.vocab_size, data.model_type,
                            max_sentences=TOKENIZER_SAMPLE, seed=seed, utf8=data.utf8_errors)
            for inputs, path in zip(sides, paths)
        ]
    return as_pair(loaded)


def train_multilingual_tokenizer(data: DataConfig, path: Path, seed: int) -> Tokenizer:
    """One joint SentencePiece model for every language of data.directions, with a control
    symbol per language (directions.tag_piece).

    Trained on a balanced sample: up to TOKENIZER_SAMPLE / languages lines of each language, the
    smaller samples repeated up to the largest, so that a language with little text keeps its
    pieces instead of being split into characters by a vocabulary made for the others."""
    directions = parse_directions(data.directions)
    corpora = direction_corpora(data.train, directions)
    files: dict[str, list[Path]] = {}
    for direction, prefix in corpora.items():
        # each corpus read as a parallel one first: unequal line counts are reported as such
        for _ in read_parallel(prefix, direction.src, direction.tgt, data.utf8_errors):
            pass
        for language in (direction.src, direction.tgt):
            path_of = corpus_file(prefix, language)
            files.setdefault(language, [])
            if path_of not in files[language]:
                files[language].append(path_of)
    per_language = max(TOKENIZER_SAMPLE // len(files), 1)
    samples = {language: reservoir_sample(_nonempty(_all_lines(paths, data.utf8_errors)),
                                          per_language, seed)
               for language, paths in files.items()}
    largest = max(len(sample) for sample in samples.values())
    balanced = [line for sample in samples.values() if sample
                for line in (sample * (largest // len(sample) + 1))[:largest]]
    # a tag for every language, not only today's targets: a run fine-tuned from this one may
    # add the directions between them
    tags = [tag_piece(language) for language in languages_of(directions)]
    return train_tokenizer([p for paths in files.values() for p in paths], path.with_suffix(""),
                           data.vocab_size, data.model_type, seed=seed, utf8=data.utf8_errors,
                           lines=iter(balanced), control_symbols=tags)


def as_pair(loaded: list[Tokenizer]) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) from one joint tokenizer (the same object twice) or one per side."""
    return (loaded[0], loaded[0]) if len(loaded) == 1 else (loaded[0], loaded[1])
