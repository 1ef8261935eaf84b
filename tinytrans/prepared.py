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

Every file is written to a temporary name and renamed into place (atomic.py); the old manifest is
removed first and the new one written last, so an interrupted prepare leaves a directory that is
refused as incomplete rather than one that mixes two corpora.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tinytrans.atomic import atomic_write, atomic_write_text
from tinytrans.config import DataConfig
from tinytrans.data import (ENCODE_CHUNK, EncodedCorpus, FilterConfig, FilterStats, RaggedIds,
                            encode_parallel, id_dtype)
from tinytrans.errors import UserError
from tinytrans.textio import LineCounter, ParallelCounter, corpus_file, read_parallel
from tinytrans.tokenizer import Tokenizer, train_tokenizer

Report = Callable[[dict[str, Any]], None]

FORMAT = "tinytrans-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REFERENCES = "valid.ref"
OFFSET_DTYPE = np.dtype(np.int64)
TOKENIZER_SAMPLE = 2_000_000  # lines: enough for a good vocabulary, bounded memory on huge corpora
IN_FLIGHT_PER_WORKER = 2  # chunks queued per worker: keeps every core busy, bounds memory


# ---------------------------------------------------------------------------------------------
# Tokenizers

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
    return (loaded[0], loaded[0]) if data.joint_vocab else (loaded[0], loaded[1])


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
    chunks = _chunks(pairs, ENCODE_CHUNK)
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


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


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
    sample drawn by `seed`). `workers` processes encode (default: every core).
    """
    report = report or (lambda event: None)
    workers = _check_workers(workers)
    output = Path(output)
    if not data.train:
        raise UserError("--train: a training corpus prefix is needed")
    _make_output_dir(output)
    (output / MANIFEST).unlink(missing_ok=True)  # from here until the end, no valid manifest
    sources = {"train": _source_files(data.train, data)}
    if data.valid is not None:
        sources["valid"] = _source_files(data.valid, data)
    tokenizer_paths = [output / name for name in tokenizer_names(data.joint_vocab)]
    src_tok, tgt_tok = make_tokenizers(data, tokenizer_paths, seed)
    report({"event": "tokenizer", "vocab_size": tgt_tok.vocab_size,
            "files": [str(p) for p in tokenizer_paths]})
    splits = {"train": _prepare_train(data, output, src_tok, tgt_tok, workers, report)}
    if data.valid is not None:
        splits["valid"] = _prepare_valid(data, output, src_tok, tgt_tok, report)
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "data": {"src": data.src, "tgt": data.tgt, "train": data.train, "valid": data.valid,
                 "model_type": data.model_type, "joint_vocab": data.joint_vocab,
                 "max_length": data.max_length, "max_ratio": data.max_ratio,
                 "utf8_errors": data.utf8_errors},
        "tokenizer": {"vocab_size": src_tok.vocab_size, "target_vocab_size": tgt_tok.vocab_size,
                      "files": {p.name: _sha256(p) for p in tokenizer_paths}},
        "sources": sources,
        "splits": splits,
    }
    _remove_leftovers(output, manifest)
    atomic_write_text(output / MANIFEST, json.dumps(manifest, indent=1) + "\n")
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
    counter = ParallelCounter(LineCounter(), LineCounter())
    pairs = read_parallel(data.train, data.src, data.tgt, data.utf8_errors, counter)
    filters = FilterConfig(data.max_length, data.max_ratio)
    stats = FilterStats()
    writers = [RaggedWriter(output, "train.src", id_dtype(src_tok.vocab_size)),
               RaggedWriter(output, "train.tgt", id_dtype(tgt_tok.vocab_size))]
    try:
        for chunk in encoded_chunks(pairs, src_tok, tgt_tok, filters, workers):
            writers[0].write(chunk.src)
            writers[1].write(chunk.tgt)
            for name in ("read", "kept", "empty", "too_long", "bad_ratio"):
                setattr(stats, name, getattr(stats, name) + getattr(chunk.stats, name))
            report({"event": "progress", "split": "train", "read": stats.read, "kept": stats.kept})
        if stats.kept == 0:
            raise UserError(f"{data.train}: no usable training pairs ({stats.read} read, all "
                            "dropped as empty, too long or of extreme length ratio)")
        files = {"src": writers[0].finish(), "tgt": writers[1].finish()}
    finally:
        for writer in writers:
            writer.discard()  # nothing left to discard once finished
    summary = SplitSummary("train", stats.read, stats.kept, stats.empty, stats.too_long,
                           stats.bad_ratio, counter.src.replaced + counter.tgt.replaced)
    report({"event": "data", **asdict(summary)})
    return {**asdict(summary), "files": files}


@dataclass
class ValidationSet:
    """Validation pairs with pieces on both sides, and their references, in one order."""

    corpus: EncodedCorpus
    references: list[str]


def encode_validation(pairs: list[tuple[str, str]], src_tok: Tokenizer,
                      tgt_tok: Tokenizer) -> ValidationSet:
    """The pairs with pieces on both sides, encoded, and their target lines as references.

    A pair is dropped when either side encodes to no pieces (an empty or blank line, or only
    characters the tokenizer's normalisation removes, such as a zero-width space): a loss or a
    translation of nothing means nothing. Pairs and references are taken from the same kept list,
    so hypothesis i is always scored against reference i.
    """
    src_ids = src_tok.encode([s for s, _ in pairs])
    tgt_ids = tgt_tok.encode([t for _, t in pairs])
    kept = [pair for pair, s, t in zip(pairs, src_ids, tgt_ids) if s and t]
    corpus = encode_parallel(iter(kept), src_tok, tgt_tok)  # no filters: one entry per kept pair
    return ValidationSet(corpus, [t for _, t in kept])


def _prepare_valid(data: DataConfig, output: Path, src_tok: Tokenizer, tgt_tok: Tokenizer,
                   report: Report) -> dict[str, Any]:
    """The validation split, encoded as training reads it (see encode_validation); it is small,
    so it is encoded in one piece."""
    pairs = list(read_parallel(data.valid, data.src, data.tgt, data.utf8_errors))
    valid = encode_validation(pairs, src_tok, tgt_tok)
    if not valid.references:
        raise UserError(f"{data.valid}: the validation set has no non-empty pairs")
    writers = [RaggedWriter(output, "valid.src", id_dtype(src_tok.vocab_size)),
               RaggedWriter(output, "valid.tgt", id_dtype(tgt_tok.vocab_size))]
    try:
        writers[0].write(valid.corpus.src)
        writers[1].write(valid.corpus.tgt)
        files = {"src": writers[0].finish(), "tgt": writers[1].finish()}
    finally:
        for writer in writers:
            writer.discard()
    # one reference per line: a line break inside a reference would shift every later one
    text = "".join(line.replace("\n", " ").replace("\r", " ") + "\n" for line in valid.references)
    atomic_write_text(output / REFERENCES, text)
    files["references"] = {"file": REFERENCES, "count": len(valid.references),
                           "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    report({"event": "valid_data", "read": len(pairs), "kept": len(valid.references)})
    return {"read": len(pairs), "kept": len(valid.references), "files": files}


def _source_files(prefix: str, data: DataConfig) -> dict[str, dict[str, Any]]:
    """Size and checksum of each side's file, as found now (before it is read)."""
    found = {}
    for lang in (data.src, data.tgt):
        path = corpus_file(prefix, lang)
        found[lang] = {"path": str(path), "bytes": path.stat().st_size, "sha256": _sha256(path)}
    return found


def _sha256(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None


def _written_names(manifest: dict[str, Any]) -> set[str]:
    names = {MANIFEST, *manifest["tokenizer"]["files"]}
    names |= {Path(name).with_suffix(".vocab").name for name in manifest["tokenizer"]["files"]}
    for split in manifest["splits"].values():
        for entry in split["files"].values():
            names |= {entry["file"]} if "file" in entry else {entry["ids"]["file"],
                                                               entry["offsets"]["file"]}
    return names


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


def _make_output_dir(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: exists and is not a directory")
    if output.is_dir():
        foreign = sorted(p.name for p in output.iterdir()
                         if p.name not in _known_names() and not p.name.startswith("."))
        if foreign:
            raise UserError(f"{output}: exists and holds files prepare did not write "
                            f"({', '.join(foreign[:3])}); choose an empty or new directory")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{output}: cannot be created ({error.strerror})") from None


def _remove_leftovers(output: Path, manifest: dict[str, Any]) -> None:
    """Files of an earlier prepare that this one did not write (a validation set no longer
    given, the other tokenizer layout): gone, so the directory holds one corpus only."""
    for name in _known_names() - _written_names(manifest):
        (output / name).unlink(missing_ok=True)


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
                       src=made["src"], tgt=made["tgt"], tokenizer=None,
                       vocab_size=self.manifest["tokenizer"]["vocab_size"],
                       model_type=made["model_type"], joint_vocab=made["joint_vocab"],
                       max_length=made["max_length"], max_ratio=made["max_ratio"],
                       utf8_errors=made["utf8_errors"])

    def tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        loaded = [Tokenizer.load(path) for path in self.tokenizer_paths]
        return (loaded[0], loaded[0]) if len(loaded) == 1 else (loaded[0], loaded[1])

    def check_tokenizers(self, paths: list[Path], where: str) -> None:
        """Refuse tokenizer files (a run's) other than the ones this corpus was encoded with."""
        expected = self.manifest["tokenizer"]["files"]
        for path, name in zip(paths, tokenizer_names(self.manifest["data"]["joint_vocab"])):
            if path.is_file() and _sha256(path) != expected[name]:
                raise UserError(f"{self.directory}: was encoded with another tokenizer than "
                                f"{where}'s {path.name}; prepare it again with --tokenizer {path}")


def open_prepared(directory: Path, verify: bool = True) -> PreparedData:
    """Read and check a prepared directory; its id arrays are memory-mapped, not loaded.

    Every check is a one-line UserError: missing or unreadable manifest, another format version,
    a file missing, truncated or (with `verify`) changed since prepare, a changed source corpus.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    try:
        _check_tokenizer_files(directory, manifest, verify)
        _check_sources(directory, manifest)
        splits = manifest["splits"]
        train = _open_split(directory, splits["train"], verify)
        valid = None
        if "valid" in splits:
            corpus = _open_split(directory, splits["valid"], verify)
            valid = ValidationSet(corpus, _read_references(directory, splits["valid"], verify))
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{directory / MANIFEST}: malformed manifest ({type(error).__name__}: "
                        f"{error})") from None
    return PreparedData(directory, manifest, train, valid)


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory (make one with 'tinytrans prepare')")
    if not path.is_file():
        raise UserError(f"{directory}: not a prepared corpus (no {MANIFEST}; an interrupted "
                        "'tinytrans prepare' leaves none: run it again)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path}: not a tinytrans prepared-corpus manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: format version {manifest.get('version')!r}, this tinytrans reads "
                        f"version {FORMAT_VERSION}: prepare the corpus again")
    return manifest


def _check_tokenizer_files(directory: Path, manifest: dict[str, Any], verify: bool) -> None:
    for name, checksum in manifest["tokenizer"]["files"].items():
        path = directory / name
        if not path.is_file():
            raise UserError(f"{path}: missing from the prepared corpus; prepare it again")
        if verify and _sha256(path) != checksum:
            raise UserError(f"{path}: is not the tokenizer this corpus was encoded with "
                            "(its checksum differs); prepare it again")


def _check_sources(directory: Path, manifest: dict[str, Any]) -> None:
    """A source file that is still where it was but has another size: the corpus is stale.
    (A data directory copied to another machine, without its sources, is fine.)"""
    for split in manifest["sources"].values():
        for source in split.values():
            path = Path(source["path"])
            if path.is_file() and path.stat().st_size != source["bytes"]:
                raise UserError(f"{directory}: stale: {path} had {source['bytes']:,} bytes when "
                                f"it was prepared and has {path.stat().st_size:,} now; prepare it "
                                "again")


def _open_split(directory: Path, split: dict[str, Any], verify: bool) -> EncodedCorpus:
    files = split["files"]
    corpus = EncodedCorpus(_open_ragged(directory, files["src"], verify),
                           _open_ragged(directory, files["tgt"], verify))
    if len(corpus.src) != split["kept"] or len(corpus.tgt) != split["kept"]:
        raise UserError(f"{directory}: the manifest counts {split['kept']} pairs but the files "
                        f"hold {len(corpus.src)} and {len(corpus.tgt)}; prepare it again")
    corpus.stats = FilterStats(**{k: split.get(k, 0) for k in ("read", "kept", "empty",
                                                                "too_long", "bad_ratio")})
    return corpus


def _open_ragged(directory: Path, entry: dict[str, Any], verify: bool) -> RaggedIds:
    ids = _map_array(directory, entry["ids"], verify)
    offsets = _map_array(directory, entry["offsets"], verify)
    consistent = len(offsets) >= 1 and offsets[0] == 0 and offsets[-1] == len(ids)
    if not consistent or np.any(np.diff(offsets) < 0):
        raise UserError(f"{directory / entry['offsets']['file']}: offsets do not describe "
                        f"{entry['ids']['file']}; prepare the corpus again")
    return RaggedIds(ids, offsets)


def _map_array(directory: Path, entry: dict[str, Any], verify: bool) -> np.ndarray:
    path = directory / entry["file"]
    dtype, count = np.dtype(entry["dtype"]), int(entry["count"])
    if not path.is_file():
        raise UserError(f"{path}: missing from the prepared corpus; prepare it again")
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
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


def _read_references(directory: Path, split: dict[str, Any], verify: bool) -> list[str]:
    entry = split["files"]["references"]
    path = directory / entry["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: missing from the prepared corpus; prepare it again") from None
    if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise UserError(f"{path}: changed since it was prepared (checksum differs); "
                        "prepare the corpus again")
    lines = data.decode("utf-8").split("\n")[:-1]
    if len(lines) != entry["count"]:
        raise UserError(f"{path}: {len(lines)} references, the manifest says {entry['count']}")
    return lines
