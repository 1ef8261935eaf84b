"""Prepared corpora: encode once, train many times.

`prepare` reads a parallel corpus, keeps the pairs training would keep (the same filters), encodes
them with every core, and writes each split and side as the two arrays of a `RaggedIds`, raw and
flat, so that training maps them into memory (np.memmap) instead of reading and encoding the text
again: a corpus of any size starts training in seconds, and the pages of the files are shared by
every training process on the machine.

    DATA/manifest.json                what is here and what it was made from (written last)
    DATA/tokenizer.model              the joint SentencePiece model (or tokenizer.src/.tgt.model)
    DATA/train.src.ids                piece ids of every kept source sentence, end to end
    DATA/train.src.offsets            int64: sentence i is ids[offsets[i]:offsets[i + 1]]
    DATA/train.tgt.ids, DATA/train.tgt.offsets
    DATA/valid.{src,tgt}.{ids,offsets}, DATA/valid.ref   validation pairs and their references

The manifest records, for every file, its dtype, its length and its SHA-256, and for the corpus
the source files' sizes and checksums, the tokenizer's checksum, the filters and what they
dropped. A directory that does not match its manifest (a truncated or replaced file, a tokenizer
other than the one it was encoded with, a source corpus that has changed since) is refused with a
one-line error before any training, never trained on.

A prepare never changes an existing directory until its replacement is complete: the new one is
built in a hidden directory beside it (same parent, so the same filesystem) and swapped in at the
end. A prepare that fails (a missing input, invalid UTF-8 half-way, Ctrl-C) leaves the old
directory exactly as it was. Every input is checked before anything is written, and an input that
the new directory would replace (a corpus or tokenizer inside it) is refused.

The manifest is read back as untrusted input: its whole shape (every table, type and file name,
each file confined to the directory) is checked before any field is used (check_manifest).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tinytrans.atomic import atomic_directory, atomic_write, atomic_write_text, same_file
from tinytrans.config import RULES, DataConfig
from tinytrans.data import (ENCODE_CHUNK, EncodedCorpus, FilterConfig, FilterStats, RaggedIds,
                            ValidationSet, chunks_of, encode_parallel, encode_validation, gather,
                            id_dtype, with_tag)
from tinytrans.directions import (DIRECTION_LANGUAGE, direction_corpora, parse_directions,
                                  tag_id)
from tinytrans.errors import UserError
from tinytrans.events import Event
from tinytrans.textio import LineCounter, ParallelCounter, corpus_file, read_parallel
from tinytrans.tokenizer import Tokenizer, make_tokenizers, tokenizer_names

Report = Callable[[dict[str, Any]], None]

FORMAT = "tinytrans-prepared"
FORMAT_VERSION = 1  # a corpus of one pair
MULTILINGUAL_VERSION = 2  # with data.directions and each split's parts: older readers refuse it
MANIFEST = "manifest.json"
REFERENCES = "valid.ref"
OFFSET_DTYPE = np.dtype(np.int64)
IN_FLIGHT_PER_WORKER = 2  # chunks queued per worker: keeps every core busy, bounds memory


class _SingleThreaded(Tokenizer):
    """A tokenizer for one worker process. SentencePiece encodes a list on all cores by default,
    but most of the time goes into building Python lists, under the GIL (measured on Multi30k:
    no faster with 2 threads than with 1); one thread per worker process avoids oversubscribing
    the cores that the other workers use."""

    def encode(self, lines: list[str], sampling_alpha: float = 0.0) -> list[list[int]]:
        if sampling_alpha > 0:  # sampling runs on one thread already
            return super().encode(lines, sampling_alpha)
        return self.sp.encode(lines, out_type=int, num_threads=1)


# ---------------------------------------------------------------------------------------------
# Encoding with every core, in order, in bounded memory

_worker_tokenizers: tuple[Tokenizer, Tokenizer] | None = None


def _start_worker(src_proto: bytes, tgt_proto: bytes) -> None:
    global _worker_tokenizers
    _worker_tokenizers = (_SingleThreaded(src_proto, "source tokenizer"),
                          _SingleThreaded(tgt_proto, "target tokenizer"))


def _encode_chunk(pairs: list[tuple[str, str]], filters: FilterConfig) -> EncodedCorpus:
    src_tok, tgt_tok = _worker_tokenizers
    return encode_parallel(pairs, src_tok, tgt_tok, filters)


def encoded_chunks(pairs: Iterable[tuple[str, str]], src_tok: Tokenizer, tgt_tok: Tokenizer,
                   filters: FilterConfig, workers: int) -> Iterator[EncodedCorpus]:
    """encode_parallel over chunks of `pairs`, in corpus order, on `workers` processes.

    The pool is fed by hand, never more than IN_FLIGHT_PER_WORKER chunks per worker ahead of the
    writer: Pool.imap would read the whole corpus into its queue as fast as it can.
    """
    chunks = chunks_of(pairs, ENCODE_CHUNK)
    if workers == 1:
        src_one, tgt_one = (_SingleThreaded(tok.model_proto) for tok in (src_tok, tgt_tok))
        for chunk in chunks:
            yield encode_parallel(chunk, src_one, tgt_one, filters)
        return
    # forkserver: workers forked from a fresh server process, not from this one, which may hold
    # threads (PyTorch's) that a fork would copy in an unknown state.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(workers, _start_worker, (src_tok.model_proto, tgt_tok.model_proto)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_encode_chunk, (chunk, filters)))
            if len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---------------------------------------------------------------------------------------------
# Writing: arrays streamed to disk, checksummed as they go

class ArrayWriter:
    """Appends arrays of one dtype to a file; `finish` makes it appear under its name at once."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, np.dtype(dtype)
        # a name of our own: atomic_write uses temporary_name(path) for the final step
        self.stream = path.with_name(f".{path.name}.stream-{os.getpid()}")
        self.handle = open(self.stream, "wb")  # noqa: SIM115 (closed by finish or discard)
        self.sha256 = hashlib.sha256()
        self.count = 0

    def write(self, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=self.dtype).tobytes()
        self.handle.write(data)
        self.sha256.update(data)
        self.count += len(values)

    def finish(self) -> dict[str, Any]:
        """Close, move into place atomically; return the file's manifest entry."""
        self.handle.close()
        atomic_write(self.path, lambda tmp: os.replace(self.stream, tmp))
        return {"file": self.path.name, "dtype": self.dtype.name, "count": self.count,
                "sha256": self.sha256.hexdigest()}

    def discard(self) -> None:
        self.handle.close()
        self.stream.unlink(missing_ok=True)


class RaggedWriter:
    """Writes one side of a split as a RaggedIds: ids and offsets, chunk after chunk."""

    def __init__(self, directory: Path, name: str, dtype: np.dtype):
        self.ids = ArrayWriter(directory / f"{name}.ids", dtype)
        self.offsets = ArrayWriter(directory / f"{name}.offsets", OFFSET_DTYPE)
        self.offsets.write(np.zeros(1, OFFSET_DTYPE))

    def write(self, ragged: RaggedIds) -> None:
        self.offsets.write(ragged.offsets[1:] + self.ids.count)  # shifted past what is written
        self.ids.write(ragged.ids)

    def finish(self) -> dict[str, Any]:
        return {"ids": self.ids.finish(), "offsets": self.offsets.finish()}

    def discard(self) -> None:
        self.ids.discard()
        self.offsets.discard()


# ---------------------------------------------------------------------------------------------
# prepare

@dataclass
class SplitSummary:
    """What one split became: pairs read and kept, and why the others were dropped."""

    split: str
    read: int
    kept: int
    empty: int = 0
    too_long: int = 0
    bad_ratio: int = 0
    utf8_replaced: int = 0


def prepare(data: DataConfig, output: Path, workers: int | None = None, seed: int = 1,
            report: Report | None = None) -> dict[str, Any]:
    """Prepare `data.train` (and `data.valid`) into the directory `output`; return the manifest.

    The tokenizer is `data.tokenizer` copied, or trained here as `train` would train it (with the
    sample drawn by `seed`). `workers` processes encode (default: every core). An existing
    `output` that a prepare wrote is replaced, whole, once the new directory is complete; until
    then, and whenever prepare fails, it stays as it was.
    """
    report = report or (lambda event: None)
    workers = _check_workers(workers)
    if not data.train:
        raise UserError("--train: a training corpus prefix is needed")
    output = _followed(Path(output))
    _check_inputs_outside(_input_files(data), output)
    _check_output_dir(output)
    sources = {"train": _source_files(data.train, data)}
    if data.valid is not None:
        sources["valid"] = _source_files(data.valid, data, "--valid")
    with atomic_directory(output) as staging:
        return _write_prepared(data, staging, output, sources, workers, seed, report)


def _write_prepared(data: DataConfig, directory: Path, output: Path,
                    sources: dict[str, dict[str, Any]], workers: int, seed: int,
                    report: Report) -> dict[str, Any]:
    """Write the whole prepared corpus into the new, empty `directory` (to become `output`),
    the manifest last; return the manifest."""
    tokenizer_paths = [directory / name for name in tokenizer_names(data.joint_vocab)]
    src_tok, tgt_tok = make_tokenizers(data, tokenizer_paths, seed)
    report({"event": Event.TOKENIZER, "vocab_size": tgt_tok.vocab_size,
            "files": [str(output / p.name) for p in tokenizer_paths]})
    splits = {"train": _prepare_train(data, directory, src_tok, tgt_tok, workers, report)}
    if data.valid is not None:
        splits["valid"] = _prepare_valid(data, directory, src_tok, tgt_tok, report)
    manifest = {
        "format": FORMAT,
        "version": MULTILINGUAL_VERSION if data.multilingual else FORMAT_VERSION,
        "data": {"src": data.src, "tgt": data.tgt, "directions": data.directions,
                 "train": data.train, "valid": data.valid,
                 "model_type": data.model_type, "joint_vocab": data.joint_vocab,
                 "max_length": data.max_length, "max_ratio": data.max_ratio,
                 "utf8_errors": data.utf8_errors},
        "tokenizer": {"vocab_size": src_tok.vocab_size, "target_vocab_size": tgt_tok.vocab_size,
                      "files": {p.name: _sha256(p) for p in tokenizer_paths}},
        "sources": sources,
        "splits": splits,
    }
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1, 1)
    if workers < 1:
        raise UserError(f"--workers: {workers} must be at least 1")
    return workers


def _prepare_train(data: DataConfig, output: Path, src_tok: Tokenizer, tgt_tok: Tokenizer,
                   workers: int, report: Report) -> dict[str, Any]:
    counters: list[ParallelCounter] = []
    filters = FilterConfig(data.max_length, data.max_ratio)
    stats = FilterStats()
    parts = []
    writers = [RaggedWriter(output, "train.src", id_dtype(src_tok.vocab_size)),
               RaggedWriter(output, "train.tgt", id_dtype(tgt_tok.vocab_size))]
    try:
        for direction, pairs in _pair_streams(data.train, data, "--train", counters):
            kept = stats.kept
            for chunk in encoded_chunks(pairs, src_tok, tgt_tok, filters, workers):
                # a multilingual source begins with its target's tag (directions.py)
                writers[0].write(chunk.src if direction is None else
                                 with_tag(chunk.src, tag_id(src_tok, direction.tgt)))
                writers[1].write(chunk.tgt)
                for name in ("read", "kept", "empty", "too_long", "bad_ratio"):
                    setattr(stats, name, getattr(stats, name) + getattr(chunk.stats, name))
                report({"event": Event.PROGRESS, "split": "train", "read": stats.read,
                        "kept": stats.kept})
            if direction is not None:
                if stats.kept == kept:
                    raise UserError(f"{data.train}: no usable training pairs for "
                                    f"{direction.name}")
                parts.append([direction.src, direction.tgt, stats.kept - kept])
        if stats.kept == 0:
            raise UserError(f"{data.train}: no usable training pairs ({stats.read} read, all "
                            "dropped as empty, too long or of extreme length ratio)")
        files = {"src": writers[0].finish(), "tgt": writers[1].finish()}
    finally:
        for writer in writers:
            writer.discard()  # nothing left to discard once finished
    summary = SplitSummary("train", stats.read, stats.kept, stats.empty, stats.too_long,
                           stats.bad_ratio, sum(c.src.replaced + c.tgt.replaced for c in counters))
    report({"event": Event.DATA, **asdict(summary)})
    return {**asdict(summary), "files": files, **({"parts": parts} if parts else {})}


def _prepare_valid(data: DataConfig, output: Path, src_tok: Tokenizer, tgt_tok: Tokenizer,
                   report: Report) -> dict[str, Any]:
    """The validation split, encoded as training reads it (see encode_validation); it is small,
    so it is encoded in one piece."""
    writers = [RaggedWriter(output, "valid.src", id_dtype(src_tok.vocab_size)),
               RaggedWriter(output, "valid.tgt", id_dtype(tgt_tok.vocab_size))]
    references, parts, read = [], [], 0
    try:
        for direction, stream in _pair_streams(data.valid, data, "--valid"):
            pairs = list(stream)
            valid = encode_validation(pairs, src_tok, tgt_tok)
            if not valid.references:
                raise UserError(f"{data.valid}: the validation set"
                                f"{'' if direction is None else ' of ' + direction.name} has "
                                "no non-empty pairs")
            writers[0].write(valid.corpus.src if direction is None else
                             with_tag(valid.corpus.src, tag_id(src_tok, direction.tgt)))
            writers[1].write(valid.corpus.tgt)
            references += valid.references
            read += len(pairs)
            if direction is not None:
                parts.append([direction.src, direction.tgt, len(valid.references)])
        files = {"src": writers[0].finish(), "tgt": writers[1].finish()}
    finally:
        for writer in writers:
            writer.discard()
    # one reference per line: a line break inside a reference would shift every later one
    text = "".join(line.replace("\n", " ").replace("\r", " ") + "\n" for line in references)
    atomic_write_text(output / REFERENCES, text)
    files["references"] = {"file": REFERENCES, "count": len(references),
                           "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    report({"event": Event.VALID_DATA, "read": read, "kept": len(references)})
    return {"read": read, "kept": len(references), "files": files,
            **({"parts": parts} if parts else {})}


def _source_files(prefix: str, data: DataConfig, flag: str = "--train") -> dict[str, dict[str, Any]]:
    """Size and checksum of each side's file, as found now (before it is read): by language, or
    for several directions by file (a language may have a file in two corpora)."""
    found = {}
    for key, (corpus, lang) in _sides(prefix, data, flag).items():
        path = corpus_file(corpus, lang)
        found[key] = {"path": str(path), "bytes": path.stat().st_size, "sha256": _sha256(path)}
    return found


def _sides(prefix: str, data: DataConfig, flag: str) -> dict[str, tuple[str, str]]:
    """The (corpus prefix, language) of every file a split reads, by a name for the manifest."""
    if not data.multilingual:
        return {lang: (prefix, lang) for lang in (data.src, data.tgt)}
    corpora = direction_corpora(prefix, parse_directions(data.directions), flag)
    return {str(corpus_file(corpus, lang)): (corpus, lang)
            for direction, corpus in corpora.items() for lang in (direction.src, direction.tgt)}


def _pair_streams(prefix: str, data: DataConfig, flag: str,
                  counters: list[ParallelCounter] | None = None):
    """(direction, pairs) for each part of a split: the one pair (direction None), or each
    direction of a multilingual corpus in order (directions.py). With `counters`, a counter of
    each part's lines is added to it."""
    parts = [(None, prefix, data.src, data.tgt)] if not data.multilingual else \
        [(d, corpus, d.src, d.tgt) for d, corpus in
         direction_corpora(prefix, parse_directions(data.directions), flag).items()]
    streams = []
    for direction, corpus, src, tgt in parts:
        counter = ParallelCounter(LineCounter(), LineCounter())
        if counters is not None:
            counters.append(counter)
        streams.append((direction, read_parallel(corpus, src, tgt, data.utf8_errors, counter)))
    return streams


def _sha256(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None


# ---------------------------------------------------------------------------------------------
# The output directory: checked before anything is written, replaced in one step at the end

def _known_names() -> set[str]:
    """Every name a prepare may write: a directory holding only these is ours to replace."""
    names = {MANIFEST, REFERENCES}
    for joint in (True, False):
        for name in tokenizer_names(joint):
            names |= {name, Path(name).with_suffix(".vocab").name}
    for split, side, kind in itertools.product(("train", "valid"), ("src", "tgt"),
                                               ("ids", "offsets")):
        names.add(f"{split}.{side}.{kind}")
    return names


# what a killed writer of an earlier version left in the directory itself (see atomic.py)
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(tmp|stream)-[0-9]+")


def _is_ours(path: Path) -> bool:
    """A file that a prepare wrote (or left, killed): one that may be replaced with the rest."""
    match = _LEFTOVER.fullmatch(path.name)
    name = match["name"] if match else path.name
    return name in _known_names() and (path.is_symlink() or not path.is_dir())


def _followed(output: Path) -> Path:
    """`output`, or where it links to (the directory is replaced, never the link to it); "." and
    ".." by their names, which the hidden directories beside them are named after."""
    if output.is_symlink() or output.name in ("", ".", ".."):
        return Path(os.path.realpath(output))
    return output


def _check_output_dir(output: Path) -> None:
    """`output` must be new, or a directory holding only what a prepare writes: it is replaced
    whole, so anything else in it (a file of the user's, hidden or not, a folder) would be lost."""
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: exists and is not a directory")
    if not output.is_dir():
        return
    try:
        foreign = sorted(p.name for p in output.iterdir() if not _is_ours(p))
    except OSError as error:
        raise UserError(f"{output}: cannot be read ({error.strerror})") from None
    if foreign:
        raise UserError(f"{output}: exists and holds files prepare did not write "
                        f"({', '.join(foreign[:3])}); choose an empty or new directory")


def _input_files(data: DataConfig) -> list[Path]:
    """Every file prepare reads (each side of each corpus, the tokenizer), checked to be there
    before anything is written, so that a typo in a flag costs nothing."""
    inputs = [corpus_file(corpus, lang) for prefix, flag in ((data.train, "--train"),
                                                             (data.valid, "--valid"))
              if prefix is not None for corpus, lang in _sides(prefix, data, flag).values()]
    if data.tokenizer is not None:
        Tokenizer.load(data.tokenizer)  # a UserError if it is missing or not a tokenizer
        inputs.append(Path(data.tokenizer))
    return inputs


def _check_inputs_outside(inputs: list[Path], output: Path) -> None:
    """Refuse an input that preparing into `output` would destroy: one inside the directory
    (which is replaced whole), or one that is the same file as a name there (a hard link)."""
    if not output.is_dir():
        return
    real_output = output.resolve()
    for path in inputs:
        # the link itself, and where it leads: both go when the directory is replaced
        places = (path.parent.resolve() / path.name, path.resolve())
        if any(place.is_relative_to(real_output) for place in places):
            raise UserError(f"{path}: an input of prepare lies inside its output directory "
                            f"{output}, which prepare replaces; choose another --output")
        for name in _known_names():
            if same_file(path, output / name):
                raise UserError(f"{path}: an input of prepare is the same file as "
                                f"{output / name}, which prepare replaces; choose another --output")


# ---------------------------------------------------------------------------------------------
# Reading a prepared directory back

@dataclass
class PreparedData:
    """A checked data directory: its manifest and memory-mapped splits."""

    directory: Path
    manifest: dict[str, Any]
    train: EncodedCorpus
    valid: ValidationSet | None

    @property
    def tokenizer_paths(self) -> list[Path]:
        names = tokenizer_names(self.manifest["data"]["joint_vocab"])
        return [self.directory / name for name in names]

    def data_config(self, data: DataConfig) -> DataConfig:
        """`data` with what this directory fixes: the languages, the tokenizer's settings, the
        filters, and the corpora it was made from (recorded in the run's config)."""
        made = self.manifest["data"]
        return replace(data, prepared=str(self.directory), train=made["train"], valid=made["valid"],
                       src=made["src"], tgt=made["tgt"], directions=made.get("directions", ""),
                       tokenizer=None,
                       vocab_size=self.manifest["tokenizer"]["vocab_size"],
                       model_type=made["model_type"], joint_vocab=made["joint_vocab"],
                       max_length=made["max_length"], max_ratio=made["max_ratio"],
                       utf8_errors=made["utf8_errors"])

    def check_tokenizers(self, paths: list[Path], where: str) -> None:
        """Refuse tokenizer files (a run's) other than the ones this corpus was encoded with."""
        expected = self.manifest["tokenizer"]["files"]
        for path, name in zip(paths, tokenizer_names(self.manifest["data"]["joint_vocab"])):
            if path.is_file() and _sha256(path) != expected[name]:
                raise UserError(f"{self.directory}: was encoded with another tokenizer than "
                                f"{where}'s {path.name}; prepare it again with --tokenizer {path}")


def open_prepared(directory: Path, verify: bool = True) -> PreparedData:
    """Read and check a prepared directory; its id arrays are memory-mapped, not loaded.

    Every check is a one-line UserError: missing, unreadable or malformed manifest (check_manifest),
    another format version, a file missing, truncated, outside the directory or (with `verify`)
    changed since prepare or holding ids outside the vocabulary, a changed source corpus.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    _check_tokenizer_files(directory, manifest, verify)
    _check_sources(directory, manifest)
    vocab = (manifest["tokenizer"]["vocab_size"], manifest["tokenizer"]["target_vocab_size"])
    splits = manifest["splits"]
    train = _open_split(directory, splits["train"], vocab, verify)
    valid = None
    if "valid" in splits:
        corpus = _open_split(directory, splits["valid"], vocab, verify)
        valid = ValidationSet(corpus, _read_references(directory, splits["valid"], verify))
    return PreparedData(directory, manifest, train, valid)


def validation_sets(valid: ValidationSet) -> dict[str, ValidationSet]:
    """A prepared validation split as validation.ValidationSets: one set, named "", or one per
    direction of a multilingual corpus (its parts, laid end to end)."""
    if not valid.corpus.parts:
        return {"": valid}
    sets, start = {}, 0
    for src, tgt, count in valid.corpus.parts:
        rows = np.arange(start, start + count)
        corpus = EncodedCorpus(gather(valid.corpus.src, rows), gather(valid.corpus.tgt, rows))
        sets[f"{src}-{tgt}"] = ValidationSet(corpus, valid.references[start: start + count])
        start += count
    return sets


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory (make one with 'tinytrans prepare')")
    if not path.is_file():
        raise UserError(f"{directory}: not a prepared corpus (no {MANIFEST}; make one with "
                        "'tinytrans prepare')")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{path}: unreadable manifest ({error})") from None
    return check_manifest(path, manifest)


# ---------------------------------------------------------------------------------------------
# The manifest's shape. The manifest is a file like any other a user hands in (edited, cut off,
# made by something else), so its whole shape is checked before any field is used: a missing
# table, a wrong type or a file outside the directory is one line naming the field, never a
# KeyError three functions later, and never a file read from elsewhere.

Check = Callable[[Any], "str | None"]  # what is wrong with a value, or None when it is fine


@dataclass(frozen=True)
class _Each:
    """A table of any keys, each value of `shape`."""

    shape: Any


@dataclass(frozen=True)
class _Optional:
    """A key of a table that may be absent."""

    shape: Any


def _integer(low: int) -> Check:
    def check(value: Any) -> str | None:
        # type() rather than isinstance(): true and false are ints to Python, not to JSON
        return None if type(value) is int and value >= low else f"must be an integer >= {low}"
    return check


def _number(value: Any) -> str | None:
    return None if type(value) in (int, float) else "must be a number"


def _boolean(value: Any) -> str | None:
    return None if type(value) is bool else "must be true or false"


def _text(value: Any) -> str | None:
    fine = isinstance(value, str) and value != "" and "\0" not in value
    return None if fine else "must be a non-empty text"


def _or_null(check: Check) -> Check:
    def check_or_null(value: Any) -> str | None:
        what = None if value is None else check(value)
        return None if what is None else f"{what} or null"
    return check_or_null


def _one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _checksum(value: Any) -> str | None:
    fine = isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)
    return None if fine else "must be a SHA-256 checksum (64 hexadecimal digits)"


_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # every name prepare writes fits


def _file_name(value: Any) -> str | None:
    """A file of the directory itself: a plain name, never a path that could lead out of it."""
    fine = isinstance(value, str) and _FILE_NAME.fullmatch(value)
    return None if fine else f"must be a plain file name in the directory, not {value!r:.60}"


def _data_rule(key: str, check: Check) -> Check:
    """`check`, then the range that config.py allows for the data key (one home for each rule)."""
    rule = RULES["data"][key]
    return lambda value: check(value) or (None if rule.admits(value) else f"must be {rule}")


def _directions(value: Any) -> str | None:
    """data.directions: "" for one pair, else directions that parse."""
    if not isinstance(value, str):
        return "must be a text"
    try:
        if value:
            parse_directions(value)
    except UserError:
        return "must be directions such as en-de,de-en"
    return None


def _parts(value: Any) -> str | None:
    """A split's directions in order: [[src, tgt, pairs], ...]."""
    fine = isinstance(value, list) and value and all(
        isinstance(part, list) and len(part) == 3 and all(
            isinstance(x, str) and DIRECTION_LANGUAGE.fullmatch(x) for x in part[:2])
        and type(part[2]) is int and part[2] >= 1 for part in value)
    return None if fine else "must be a list of [source, target, pairs]"


_ID_DTYPES = sorted({id_dtype(size).name for size in (1, 2**31 - 1)})  # what id_dtype chooses
_ARRAY = {"file": _file_name, "count": _integer(0), "sha256": _checksum}
_RAGGED = {"ids": {**_ARRAY, "dtype": _one_of(*_ID_DTYPES)},
           "offsets": {**_ARRAY, "dtype": _one_of(OFFSET_DTYPE.name)}}
_PAIRS = {"read": _integer(0), "kept": _integer(1)}
_MANIFEST_SHAPE = {
    "data": {"src": _data_rule("src", _text), "tgt": _data_rule("tgt", _text),
             "directions": _Optional(_directions), "train": _text,
             "valid": _or_null(_text), "model_type": _data_rule("model_type", _text),
             "joint_vocab": _boolean, "max_length": _data_rule("max_length", _integer(1)),
             "max_ratio": _data_rule("max_ratio", _number),
             "utf8_errors": _data_rule("utf8_errors", _text)},
    "tokenizer": {"vocab_size": _integer(1), "target_vocab_size": _integer(1),
                  "files": _Each(_checksum)},
    "sources": _Each(_Each({"path": _text, "bytes": _integer(0), "sha256": _checksum})),
    "splits": {
        "train": {**_PAIRS, "empty": _integer(0), "too_long": _integer(0),
                  "bad_ratio": _integer(0), "utf8_replaced": _integer(0),
                  "files": {"src": _RAGGED, "tgt": _RAGGED}, "parts": _Optional(_parts)},
        "valid": _Optional({**_PAIRS, "parts": _Optional(_parts), "files": {
            "src": _RAGGED, "tgt": _RAGGED,
            "references": {"file": _file_name, "count": _integer(1), "sha256": _checksum}}}),
    },
}


def check_manifest(path: Path, manifest: Any) -> dict[str, Any]:
    """`manifest` (read from `path`) if it has the shape prepare writes, else a UserError naming
    the first field that does not: `manifest.json: 'splits.train.kept' must be an integer >= 1`."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path}: not a tinytrans prepared-corpus manifest")
    if manifest.get("version") not in (FORMAT_VERSION, MULTILINGUAL_VERSION):
        raise UserError(f"{path}: format version {manifest.get('version')!r:.20}, this tinytrans "
                        f"reads versions {FORMAT_VERSION} and {MULTILINGUAL_VERSION}: prepare the "
                        "corpus again")
    problem = _shape_problem(manifest, _MANIFEST_SHAPE, "")
    if problem is not None:
        field, what = problem
        raise UserError(f"{path}: '{field}' {what}")
    expected = tokenizer_names(manifest["data"]["joint_vocab"])
    if sorted(manifest["tokenizer"]["files"]) != sorted(expected):
        raise UserError(f"{path}: 'tokenizer.files' must list {' and '.join(expected)} (the "
                        f"files of 'data.joint_vocab' = {manifest['data']['joint_vocab']})")
    if (manifest["data"]["valid"] is None) != ("valid" not in manifest["splits"]):
        raise UserError(f"{path}: 'splits.valid' must be there exactly when 'data.valid' names a "
                        "validation corpus")
    _check_parts(path, manifest)
    return manifest


def _check_parts(path: Path, manifest: dict[str, Any]) -> None:
    """A multilingual corpus (version 2, data.directions) lists each split's directions in
    their order, with their pairs; a corpus of one pair (version 1) lists none."""
    directions = manifest["data"].get("directions", "")
    expected = [[d.src, d.tgt] for d in parse_directions(directions)] if directions else None
    if (manifest["version"] == MULTILINGUAL_VERSION) != bool(directions):
        raise UserError(f"{path}: 'data.directions' must name directions exactly in a version "
                        f"{MULTILINGUAL_VERSION} manifest")
    for name, split in manifest["splits"].items():
        parts = split.get("parts")
        if [part[:2] for part in parts or []] != (expected or []) or \
                (parts is not None and sum(part[2] for part in parts) != split["kept"]):
            raise UserError(f"{path}: 'splits.{name}.parts' must list the directions of "
                            f"'data.directions' in order, their pairs adding up to "
                            f"'splits.{name}.kept'")


def _shape_problem(value: Any, shape: Any, field: str) -> tuple[str, str] | None:
    """The first field of `value` (named from `field` down) that does not have `shape`, and what
    is wrong with it; None when all is well. A shape is a Check, a dict of the keys of a table
    (some of them _Optional) or _Each."""
    if callable(shape):
        what = shape(value)
        return None if what is None else (field, what)
    if not isinstance(value, dict):
        return field, "must be a table (a JSON object)"
    if isinstance(shape, _Each):
        shape = {key: shape.shape for key in value}
    for key, inner in shape.items():
        name = f"{field}.{key}" if field else key
        name = name if name.isprintable() else repr(name)[1:-1]  # one line, whatever the key
        if key not in value:
            if isinstance(inner, _Optional):
                continue
            return name, "is missing"
        inner = inner.shape if isinstance(inner, _Optional) else inner
        problem = _shape_problem(value[key], inner, name)
        if problem is not None:
            return problem
    return None


# ---------------------------------------------------------------------------------------------
# The files a checked manifest names

def _member(directory: Path, name: str) -> Path:
    """The file `name` of the prepared directory, which must be a regular file there; a link
    leading out of the directory is refused (the manifest vouches for what is inside only)."""
    path = directory / name
    try:
        regular = path.is_file()  # through links: a dangling one, a folder or a pipe is not
        outside = (regular and path.is_symlink()
                   and not path.resolve().is_relative_to(directory.resolve()))
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
    if not regular:
        raise UserError(f"{path}: missing from the prepared corpus; prepare it again")
    if outside:
        raise UserError(f"{path}: links to {path.resolve()}, outside the prepared corpus; "
                        "prepare it again")
    return path


def _check_tokenizer_files(directory: Path, manifest: dict[str, Any], verify: bool) -> None:
    """The tokenizer(s) must be there, be the ones encoded with (`verify`) and have the sizes
    the manifest gives (the bound of every id in the arrays)."""
    info = manifest["tokenizer"]
    sizes = []
    for name in tokenizer_names(manifest["data"]["joint_vocab"]):
        path = _member(directory, name)
        if verify and _sha256(path) != info["files"][name]:
            raise UserError(f"{path}: is not the tokenizer this corpus was encoded with "
                            "(its checksum differs); prepare it again")
        sizes.append(Tokenizer.load(path).vocab_size)
    if [sizes[0], sizes[-1]] != [info["vocab_size"], info["target_vocab_size"]]:  # joint: one
        raise UserError(f"{directory / MANIFEST}: 'tokenizer.vocab_size' and "
                        f"'tokenizer.target_vocab_size' are {info['vocab_size']} and "
                        f"{info['target_vocab_size']}, the tokenizer files have {sizes[0]} and "
                        f"{sizes[-1]} pieces; prepare it again")


def _check_sources(directory: Path, manifest: dict[str, Any]) -> None:
    """A source file that is still where it was but has another size: the corpus is stale.
    (A data directory copied to another machine, without its sources, is fine.)"""
    for split in manifest["sources"].values():
        for source in split.values():
            size = _size_now(source["path"])
            if size is not None and size != source["bytes"]:
                raise UserError(f"{directory}: stale: {source['path']} had {source['bytes']:,} "
                                f"bytes when it was prepared and has {size:,} now; prepare it "
                                "again")


def _size_now(path: str) -> int | None:
    """The size of the file at `path`, or None where no file can be found there."""
    try:
        return os.stat(path).st_size if os.path.isfile(path) else None
    except (OSError, ValueError):  # a name too long, or not encodable: no such file here
        return None


def _open_split(directory: Path, split: dict[str, Any], vocab: tuple[int, int],
                verify: bool) -> EncodedCorpus:
    files = split["files"]
    corpus = EncodedCorpus(_open_ragged(directory, files["src"], vocab[0], verify),
                           _open_ragged(directory, files["tgt"], vocab[1], verify))
    if len(corpus.src) != split["kept"] or len(corpus.tgt) != split["kept"]:
        raise UserError(f"{directory}: the manifest counts {split['kept']} pairs but the files "
                        f"hold {len(corpus.src)} and {len(corpus.tgt)}; prepare it again")
    corpus.stats = FilterStats(**{k: split.get(k, 0) for k in ("read", "kept", "empty",
                                                                "too_long", "bad_ratio")})
    corpus.parts = [(src, tgt, count) for src, tgt, count in split.get("parts", [])]
    if corpus.parts and sum(count for *_, count in corpus.parts) != len(corpus):
        raise UserError(f"{directory}: the manifest's directions count "
                        f"{sum(count for *_, count in corpus.parts)} pairs, the files hold "
                        f"{len(corpus)}; prepare it again")
    return corpus


def _open_ragged(directory: Path, entry: dict[str, Any], vocab_size: int,
                 verify: bool) -> RaggedIds:
    ids = _map_array(directory, entry["ids"], verify)
    offsets = _map_array(directory, entry["offsets"], verify)
    consistent = len(offsets) >= 1 and offsets[0] == 0 and offsets[-1] == len(ids)
    if not consistent or np.any(np.diff(offsets) < 0):
        raise UserError(f"{directory / entry['offsets']['file']}: offsets do not describe "
                        f"{entry['ids']['file']}; prepare the corpus again")
    # An id beyond the vocabulary would index past the embedding table in training. The
    # checksum says only that the file is the one the manifest names, not that its ids fit.
    if verify and len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        raise UserError(f"{directory / entry['ids']['file']}: holds piece ids outside the "
                        f"tokenizer's {vocab_size}; prepare the corpus again")
    return RaggedIds(ids, offsets)


def _map_array(directory: Path, entry: dict[str, Any], verify: bool) -> np.ndarray:
    path = _member(directory, entry["file"])
    dtype, count = np.dtype(entry["dtype"]), entry["count"]
    size = path.stat().st_size
    if size != count * dtype.itemsize:
        state = "truncated" if size < count * dtype.itemsize else "longer than its manifest says"
        raise UserError(f"{path}: {state} ({size:,} bytes, the manifest says {count:,} x "
                        f"{dtype.itemsize}); prepare the corpus again")
    if verify and _sha256(path) != entry["sha256"]:
        raise UserError(f"{path}: changed since it was prepared (checksum differs); "
                        "prepare the corpus again")
    if count == 0:
        return np.zeros(0, dtype)  # an empty file cannot be mapped
    try:
        return np.memmap(path, dtype=dtype, mode="r", shape=(count,))
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None


def _read_references(directory: Path, split: dict[str, Any], verify: bool) -> list[str]:
    entry = split["files"]["references"]
    path = _member(directory, entry["file"])
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
    if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise UserError(f"{path}: changed since it was prepared (checksum differs); "
                        "prepare the corpus again")
    try:
        lines = data.decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: invalid UTF-8 at byte {error.start}; prepare the corpus "
                        "again") from None
    if len(lines) != entry["count"]:
        raise UserError(f"{path}: {len(lines)} references, the manifest says {entry['count']}")
    return lines

