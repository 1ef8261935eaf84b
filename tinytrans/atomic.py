"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the new one.

Write to a temporary file in the same directory, fsync it, then rename over the target; rename
within one filesystem is atomic on POSIX. fairseq's checkpoints use the same recipe. Every file
tinytrans writes goes through here (but metrics.jsonl, which training appends to line by line),
so a failed or interrupted command never leaves a half file where a user's file was, and errors
from the operating system name the file the user asked for.
The temporary file is created new under a random name, so nothing planted beside the target (a
symlink to someone else's file, in a shared directory such as /tmp) is ever written through.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tinytrans.errors import UserError

# What temporary_name makes (and a killed writer leaves): `.NAME.tmp-DIGITS`
LEFTOVER = re.compile(r"\.(?P<name>.+)\.tmp-[0-9]+")
# safetensors' save_file writes through a temporary file of its own (Rust's tempfile crate:
# `.tmp` and six random characters) beside the one it was asked to write
FOREIGN_LEFTOVER = re.compile(r"\.tmp[A-Za-z0-9]{6}")
# Names found taken in a row before giving up (with 64 random bits, one clash is already rare).
TEMPORARY_ATTEMPTS = 100
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # not on Windows, where links need privileges anyway
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW | getattr(os, "O_CLOEXEC", 0)


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
    """Yield a new, empty temporary file beside `path`; when the block ends without an exception,
    what was written there replaces `path` in one step (fsync the file, rename, fsync the
    directory). On any exception the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    check_writable(path)
    tmp = create_temporary(path)
    replaced = False
    try:
        yield tmp
        try:
            _fsync_file(tmp)
            os.replace(tmp, path)
            replaced = True
            _fsync_directory(path.parent)
        except OSError as error:
            raise os_error(path, error) from None
    finally:
        if not replaced:  # after the rename the name may be anyone's again: leave it alone
            tmp.unlink(missing_ok=True)


def create_temporary(path: Path) -> Path:
    """Create a new empty file under a hidden, unguessable name beside `path`; return its name.

    O_EXCL | O_NOFOLLOW: the name must not exist yet, so a file or symlink that someone else
    planted there is never opened, followed or overwritten (another name is drawn instead).
    Mode 0o666 lets the kernel apply the umask (and a directory's default ACL) exactly as for a
    plain open(). tempfile.mkstemp would make the file 0o600, and Python reads the umask only by
    setting it, which would change it for every thread of the process.
    """
    for _ in range(TEMPORARY_ATTEMPTS):
        tmp = temporary_name(path)
        try:
            fd = os.open(tmp, _CREATE_NEW, 0o666)
        except FileExistsError:
            continue
        except OSError as error:
            raise os_error(path, error) from None
        os.close(fd)  # writers open it again by name (safetensors, savefig, os.replace onto it)
        return tmp
    raise UserError(f"{path}: cannot be written (no free temporary name in {path.parent})")


def temporary_name(path: Path) -> Path:
    """A hidden, unguessable name beside `path` (`.NAME.tmp-DIGITS`); nothing is created.

    The digits are random, not the process id, so another user cannot plant a symlink there in
    advance; a killed writer leaves only a file of this form, which remove_leftovers recognises.
    """
    return path.with_name(f".{path.name}.tmp-{secrets.randbits(64)}")


@contextmanager
def atomic_directory(output: Path) -> Iterator[Path]:
    """Yield a new, empty directory beside `output` to fill; when the block ends without an
    exception it replaces `output` (an existing directory is replaced whole); on any exception it
    is removed and `output` stays exactly as it was.

    The old directory is renamed aside first: between the two renames `output` is missing for an
    instant, and a crash exactly then leaves the old one whole under its hidden name (an atomic
    exchange, Linux's renameat2, is not in Python's standard library)."""
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{output}: cannot be created ({error.strerror})") from None
    staging = _new_directory_beside(output, "build")
    try:
        yield staging
        _swap_in(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already gone when it was swapped in


def _new_directory_beside(path: Path, tag: str) -> Path:
    """A new hidden directory `.NAME.TAG-DIGITS` beside `path`, under a name no one could plant
    anything at in advance; mkdir creates it exclusively (and with the umask, as any mkdir)."""
    for _ in range(TEMPORARY_ATTEMPTS):
        candidate = path.with_name(f".{path.name}.{tag}-{secrets.randbits(64)}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as error:
            raise UserError(f"{path}: cannot be created ({error.strerror})") from None
    raise UserError(f"{path}: cannot be created (no free temporary name in {path.parent})")


def _swap_in(staging: Path, output: Path) -> None:
    """Make the complete directory `staging` appear at `output`, then remove the old one. The old
    one is removed only once the new one is in place: if anything fails in between (Ctrl-C
    included), it is put back, or, should even that fail, left whole under its hidden name."""
    old = _new_directory_beside(output, "old") if output.is_dir() else None
    swapped = False
    try:
        if old is not None:
            os.rename(output, old)  # onto the empty directory just made for it
        os.rename(staging, output)
        swapped = True
    except OSError as error:
        raise UserError(f"{output}: cannot be replaced ({error.strerror})") from None
    finally:
        if old is not None and not swapped:
            try:
                if not output.exists():
                    os.rename(old, output)  # put the old one back
                else:
                    old.rmdir()  # the rename aside never happened: only the empty placeholder
            except OSError:
                pass  # the old directory stays whole under its hidden name
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    try:
        _fsync_directory(output.parent)  # persist the renames, so a power cut cannot undo them
    except OSError as error:
        raise UserError(f"{output}: written but not synced to disk ({error.strerror})") from None


def remove_leftovers(directory: Path, names: Iterable[str] | None = None) -> None:
    """Delete the temporary files that writers killed mid-write (a power cut, SIGKILL) left beside
    any of `names` (None: any name) in `directory`. Only for a directory no one else is writing
    in: a run's own files, when the run resumes."""
    wanted = None if names is None else set(names)
    for path in Path(directory).glob(".*"):
        match = LEFTOVER.fullmatch(path.name)
        ours = match is not None and (wanted is None or match["name"] in wanted)
        theirs = wanted is None and FOREIGN_LEFTOVER.fullmatch(path.name) is not None
        if (ours or theirs) and not path.is_dir():
            path.unlink(missing_ok=True)


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


def _fsync_file(path: Path) -> None:
    """Persist what the writer wrote before the rename makes it visible under the real name."""
    fd = os.open(path, os.O_RDONLY | _NO_FOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (the directory entry), so a power cut cannot undo it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
