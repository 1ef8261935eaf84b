"""Reading text: plain or gzipped files, strict UTF-8, and parallel corpora named by a prefix.

A corpus is a prefix plus a language pair: `data/train` with `en` and `de` means the files
`data/train.en` and `data/train.de` (or `.en.gz`, `.de.gz`). Lines are streamed, never held as a
whole list, so a corpus of any size can be read.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tinytrans.config import UTF8_POLICIES
from tinytrans.errors import UserError


def corpus_file(prefix: str | Path, lang: str) -> Path:
    """The file holding one side of a corpus: PREFIX.LANG, else PREFIX.LANG.gz."""
    plain = Path(f"{prefix}.{lang}")
    for path in (plain, Path(f"{plain}.gz")):
        if path.is_file():
            return path
    raise UserError(f"{plain}: no such file (nor {plain}.gz) for language '{lang}' of corpus '{prefix}'")


def open_binary(path: Path) -> BinaryIO:
    """Open a plain or gzip file for reading bytes; gzip is recognised by its magic number."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a text file") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
    if handle.peek(2)[:2] == b"\x1f\x8b":
        handle.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return handle


@dataclass
class LineCounter:
    """What a reader saw: lines read and lines whose invalid UTF-8 was replaced."""

    lines: int = 0
    replaced: int = 0


def read_lines(
    path: Path, utf8: str = "strict", counter: LineCounter | None = None
) -> Iterator[str]:
    """Yield the lines of a text file without their line ends.

    With utf8="strict" an invalid byte sequence is an error naming the file and line; with
    "replace" it becomes U+FFFD and is counted in `counter.replaced`.
    """
    if utf8 not in UTF8_POLICIES:
        raise UserError(f"--utf8-errors: '{utf8}' is not one of {', '.join(UTF8_POLICIES)}")
    counter = counter if counter is not None else LineCounter()
    with open_binary(path) as handle:
        try:
            for raw in handle:
                counter.lines += 1
                yield decode_line(raw, path, counter, utf8)
        except (OSError, EOFError, zlib.error) as error:  # truncated or corrupt gzip, I/O errors
            raise UserError(f"{path}: unreadable after line {counter.lines} ({error})") from None


def decode_line(raw: bytes, path: Path | str, counter: LineCounter, utf8: str) -> str:
    """Decode one line of bytes (line end removed), applying the UTF-8 policy."""
    raw = raw.rstrip(b"\r\n")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if utf8 == "strict":
            raise UserError(
                f"{path}:{counter.lines}: invalid UTF-8 at byte {error.start} "
                "(use --utf8-errors replace to replace such bytes)"
            ) from None
        counter.replaced += 1
        return raw.decode("utf-8", errors="replace")


@dataclass
class ParallelCounter:
    """Counters for a parallel read; filled in while the pairs stream."""

    src: LineCounter
    tgt: LineCounter


def read_parallel(
    prefix: str | Path, src: str, tgt: str, utf8: str = "strict",
    counter: ParallelCounter | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield (source, target) line pairs of a corpus; unequal line counts are an error.

    The check happens while streaming: when one side ends first, the rest of the other is counted
    so that the error can give both files and both counts.
    """
    src_path, tgt_path = corpus_file(prefix, src), corpus_file(prefix, tgt)
    counter = counter if counter is not None else ParallelCounter(LineCounter(), LineCounter())
    src_lines = read_lines(src_path, utf8, counter.src)
    tgt_lines = read_lines(tgt_path, utf8, counter.tgt)
    for src_line in src_lines:
        tgt_line = next(tgt_lines, None)
        if tgt_line is None:
            for _ in src_lines:
                pass
            raise_unequal(src_path, counter.src.lines, tgt_path, counter.tgt.lines)
        yield src_line, tgt_line
    if sum(1 for _ in tgt_lines):  # reads the target side to its end, so its count is complete
        raise_unequal(src_path, counter.src.lines, tgt_path, counter.tgt.lines)


def raise_unequal(src_path: Path, src_count: int, tgt_path: Path, tgt_count: int) -> None:
    raise UserError(
        f"{src_path} has {src_count} lines but {tgt_path} has {tgt_count}: "
        "a parallel corpus needs one target line per source line"
    )
