"""Atomic writes: a new temporary file under an unguessable name, never a planted one; the old
file survives any failure; permission bits as a plain open() gives them."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tinytrans import atomic, prepared
from tinytrans.atomic import (atomic_directory, atomic_text_output, atomic_write, atomic_write_text,
                              remove_leftovers, temporary_name)
from tinytrans.errors import UserError

OLD = b"the previous contents\n"


def write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_by_name(path: Path, text: str) -> None:
    """As safetensors and matplotlib do: open the given name again and truncate it."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_streamed(path: Path, text: str) -> None:
    with atomic_text_output(path) as handle:
        handle.write(text)


WRITERS = [write_text, write_by_name, write_streamed]


def predictable_names(directory: Path, names: list[str]) -> Callable[[Path], Path]:
    """A temporary_name that hands out `names` in order: what an attacker would need to know."""
    queue: Iterator[str] = iter(names)
    return lambda path: directory / next(queue)


def plant_symlink(at: Path, victim: Path) -> None:
    at.symlink_to(victim)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """Someone else's file, outside the directory written to."""
    path = tmp_path / "victim.txt"
    path.write_bytes(b"not yours\n")
    return path


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


# ---------------------------------------------------------------------------------------------
# Planted links are never followed


@pytest.mark.parametrize("write", WRITERS)
def test_a_symlink_at_the_old_predictable_name_is_not_followed(write, directory, victim):
    target = directory / "hyp.de"
    planted = directory / f".{target.name}.tmp-{os.getpid()}"
    plant_symlink(planted, victim)
    write(target, "translation\n")
    assert target.read_text() == "translation\n" and not target.is_symlink()
    assert victim.read_bytes() == b"not yours\n"
    assert planted.is_symlink()  # left as it was: not ours to remove


@pytest.mark.parametrize("write", WRITERS)
def test_a_symlink_at_a_name_known_in_advance_is_skipped(write, directory, victim, monkeypatch):
    target = directory / "hyp.de"
    names = [".guessed-1", ".guessed-2", ".free"]
    for name in names[:2]:
        plant_symlink(directory / name, victim)
    monkeypatch.setattr(atomic, "temporary_name", predictable_names(directory, names))
    write(target, "translation\n")
    assert target.read_text() == "translation\n"
    assert victim.read_bytes() == b"not yours\n"
    assert sorted(p.name for p in directory.iterdir()) == [".guessed-1", ".guessed-2", "hyp.de"]


def test_a_dangling_symlink_at_the_name_is_not_followed(directory, monkeypatch):
    """A link to a file that does not exist yet must not create that file."""
    elsewhere = directory.parent / "created-by-us"
    plant_symlink(directory / ".guessed", elsewhere)
    monkeypatch.setattr(atomic, "temporary_name",
                        predictable_names(directory, [".guessed", ".free"]))
    write_text(directory / "hyp.de", "x\n")
    assert not elsewhere.exists() and (directory / "hyp.de").read_text() == "x\n"


def test_when_every_name_is_taken_it_is_a_user_error(directory, victim, monkeypatch):
    plant_symlink(directory / ".guessed", victim)
    monkeypatch.setattr(atomic, "temporary_name", lambda path: directory / ".guessed")
    with pytest.raises(UserError, match="no free temporary name"):
        write_text(directory / "hyp.de", "x\n")
    assert victim.read_bytes() == b"not yours\n"
    assert not (directory / "hyp.de").exists()


def test_temporary_names_are_hidden_unguessable_and_beside_the_target(tmp_path):
    target = tmp_path / "model.safetensors"
    names = {temporary_name(target) for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.parent == tmp_path and name.name.startswith(".model.safetensors.tmp-")
        assert str(os.getpid()) != name.name.rsplit("-", 1)[1]
        # what a killed writer leaves is recognised as such when a prepared directory is replaced
        assert prepared._LEFTOVER.fullmatch(name.name)


# ---------------------------------------------------------------------------------------------
# Failures leave the old file, and nothing else


class Crash(Exception):
    pass


def crash_half_way(tmp: Path) -> None:
    tmp.write_bytes(b"half of the new ")
    raise Crash


def disk_full_half_way(tmp: Path) -> None:
    tmp.write_bytes(b"half of the new ")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("writer, error", [(crash_half_way, Crash),
                                           (disk_full_half_way, UserError)])
def test_a_failure_mid_write_leaves_the_old_file(directory, writer, error):
    target = directory / "metrics.json"
    target.write_bytes(OLD)
    with pytest.raises(error):
        atomic_write(target, writer)
    assert target.read_bytes() == OLD
    assert [p.name for p in directory.iterdir()] == ["metrics.json"]


def test_an_exception_in_a_streamed_write_leaves_the_old_file(directory):
    target = directory / "out.de"
    target.write_bytes(OLD)
    with pytest.raises(KeyboardInterrupt):
        with atomic_text_output(target) as handle:
            handle.write("half of the new ")
            raise KeyboardInterrupt
    assert target.read_bytes() == OLD
    assert [p.name for p in directory.iterdir()] == ["out.de"]


def test_a_failed_rename_leaves_the_old_file(directory, monkeypatch):
    target = directory / "out.de"
    target.write_bytes(OLD)

    def failing_replace(src, dst):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(UserError, match="out.de: cannot be written"):
        write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_bytes() == OLD
    assert [p.name for p in directory.iterdir()] == ["out.de"]


# ---------------------------------------------------------------------------------------------
# What writers see, and what the result looks like


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
@pytest.mark.parametrize("write", WRITERS)
def test_permission_bits_follow_the_umask(directory, write, umask):
    old_umask = os.umask(umask)
    try:
        write(directory / "new.txt", "x\n")
        (directory / "plain.txt").write_text("x\n")
    finally:
        os.umask(old_umask)
    mode = stat.S_IMODE((directory / "new.txt").stat().st_mode)
    assert mode == 0o666 & ~umask
    assert mode == stat.S_IMODE((directory / "plain.txt").stat().st_mode)


def test_the_writer_gets_an_empty_file_of_its_own(directory):
    seen = []

    def look(tmp: Path) -> None:
        seen.append((tmp.parent, tmp.is_file(), tmp.is_symlink(), tmp.stat().st_size))
        tmp.write_bytes(b"new")
    atomic_write(directory / "a.bin", look)
    assert seen == [(directory, True, False, 0)]
    assert (directory / "a.bin").read_bytes() == b"new"


def test_writers_that_take_a_file_name_still_work(directory):
    """safetensors opens the temporary name itself; prepared.py renames a finished file onto it."""
    weights = directory / "model.safetensors"
    atomic_write(weights, lambda tmp: save_file({"w": torch.ones(2)}, str(tmp)))
    assert weights.stat().st_size > 0
    stream = directory / "stream"
    stream.write_bytes(b"ids")
    atomic_write(directory / "train.ids", lambda tmp: os.replace(stream, tmp))
    assert (directory / "train.ids").read_bytes() == b"ids"
    assert sorted(p.name for p in directory.iterdir()) == ["model.safetensors", "train.ids"]


def test_a_symlink_at_the_target_is_replaced_not_written_through(directory, victim):
    target = directory / "out.de"
    plant_symlink(target, victim)
    write_text(target, "new\n")
    assert victim.read_bytes() == b"not yours\n"
    assert not target.is_symlink() and target.read_text() == "new\n"


def test_remove_leftovers_deletes_only_what_a_killed_writer_of_those_names_left(tmp_path):
    ours = temporary_name(tmp_path / "config.toml")
    other = temporary_name(tmp_path / "notes.txt")
    lookalike = tmp_path / ".config.toml.tmp-abc"  # not a name temporary_name makes
    for path in (ours, other, lookalike, tmp_path / "config.toml"):
        path.write_text("x")
    remove_leftovers(tmp_path, ["config.toml"])
    assert not ours.exists() and other.exists() and lookalike.exists()
    assert (tmp_path / "config.toml").exists()
    remove_leftovers(tmp_path)
    assert not other.exists() and lookalike.exists()


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_directory_swap_that_fails_half_way_keeps_the_old_directory(tmp_path, monkeypatch, failure):
    output = tmp_path / "out"
    output.mkdir()
    (output / "kept").write_text("old")
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new directory into place: after the old one was moved aside
            raise failure
        real_rename(src, dst)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises((UserError, KeyboardInterrupt)):
        with atomic_directory(output) as staging:
            (staging / "new").write_text("new")
    monkeypatch.undo()
    assert [p.name for p in output.iterdir()] == ["kept"] and (output / "kept").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left beside it


def test_remove_leftovers_of_any_name_includes_what_safetensors_left(tmp_path):
    safetensors_leftover = tmp_path / ".tmpWIiJ7L"  # save_file's own temporary file, killed
    not_one = tmp_path / ".tmpseven77"  # seven characters: not the crate's pattern
    for path in (safetensors_leftover, not_one):
        path.write_text("x")
    remove_leftovers(tmp_path, ["config.toml"])  # named: only tinytrans' own leftovers go
    assert safetensors_leftover.exists()
    remove_leftovers(tmp_path)
    assert not safetensors_leftover.exists() and not_one.exists()
