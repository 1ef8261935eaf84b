"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the new one.

Write to a temporary file in the same directory, fsync it, then rename over the target; rename
within one filesystem is atomic on POSIX. fairseq's checkpoints use the same recipe. Every file
tinytrans writes goes through here, so a failed or interrupted command never leaves a half file
where a user's file was, and errors from the operating system name the file the user asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tinytrans.errors import UserError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, then make the result appear at `path` in one step."""
    with _replaced_when_done(path) as tmp:
        try:
            write(tmp)
        except OSError as error:
            raise os_error(Path(path), error) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_text_output(path: Path) -> Iterator[TextIO]:
    """Stream text into a temporary file beside `path`; it replaces `path` only when the block
    ends without an exception (Ctrl-C included), so the old file survives any failure."""
    with _replaced_when_done(path) as tmp:
        try:
            handle = open(tmp, "w", encoding="utf-8")
        except OSError as error:
            raise os_error(Path(path), error) from None
        with handle:
            yield handle
            try:
                handle.flush()
            except OSError as error:
                raise os_error(Path(path), error) from None


@contextmanager
def _replaced_when_done(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an exception, what was
    written there replaces `path` in one step (fsync the file, rename, fsync the directory).
    On any exception the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    check_writable(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        try:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_directory(path.parent)
        except OSError as error:
            raise os_error(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path`, unique to this process (a killed writer leaves only this)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def check_writable(path: Path) -> None:
    """Refuse, before any work, a path that cannot become a file: a directory, a missing parent."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory, a file name is needed")
    parent = path.parent
    if not parent.exists():
        raise UserError(f"{path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"{path}: {parent} is not a directory")


def same_file(a: Path | int, b: Path | int) -> bool:
    """Whether two paths (or open file descriptors) are one file, through links and `./` too."""
    try:
        sa = os.fstat(a) if isinstance(a, int) else os.stat(a)
        sb = os.fstat(b) if isinstance(b, int) else os.stat(b)
    except (OSError, ValueError):
        return False  # one of them does not exist (yet): they cannot be the same file
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def os_error(path: Path, error: OSError) -> UserError:
    """An operating-system error while writing `path`, as one line a user can act on."""
    return UserError(f"{path}: cannot be written ({error.strerror or error})")


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (the directory entry), so a power cut cannot undo it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
