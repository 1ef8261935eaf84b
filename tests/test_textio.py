"""Reading text: plain and gzipped files, UTF-8 policies, line ends and parallel corpora."""

from __future__ import annotations

import gc
import gzip
import warnings
from pathlib import Path

import pytest
from conftest import corrupt_gzip, write_lines

from tinytrans.errors import UserError
from tinytrans.textio import (
    LineCounter,
    ParallelCounter,
    corpus_file,
    open_binary,
    read_lines,
    read_parallel,
)


def test_plain_and_gzip_files_read_the_same_lines(bundled: Path, tmp_path: Path) -> None:
    plain = bundled / "test.de"
    packed = tmp_path / "test.de.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    lines = list(read_lines(plain))
    assert len(lines) == 1000
    assert list(read_lines(packed)) == lines
    assert not any(line.endswith(("\n", "\r")) for line in lines)


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "no-suffix.txt"
    path.write_bytes(gzip.compress(b"eins\nzwei\n"))
    assert list(read_lines(path)) == ["eins", "zwei"]


def test_reading_a_gzip_file_leaves_no_file_open(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.en.gz", ["one", "two"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(read_lines(path)) == ["one", "two"]
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, f"unclosed file after reading {path}: {leaks[0].message}"


def test_read_parallel_reads_gzipped_corpora(parallel_corpus) -> None:
    prefix = parallel_corpus(["a", "b"], ["x", "y"], gz=True)
    assert list(read_parallel(prefix, "en", "de")) == [("a", "x"), ("b", "y")]


def test_line_ends_are_removed_but_empty_lines_kept(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "crlf.txt", ["first", "", "  spaced  ", "last"], newline=b"\r\n")
    assert list(read_lines(path)) == ["first", "", "  spaced  ", "last"]


def test_last_line_without_newline_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(b"one\ntwo")
    assert list(read_lines(path)) == ["one", "two"]


def test_missing_file_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.en"
    with pytest.raises(UserError, match="absent.en") as error:
        list(read_lines(path))
    assert str(path) in str(error.value)


def test_directory_instead_of_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="directory") as error:
        list(read_lines(tmp_path))
    assert str(tmp_path) in str(error.value)


def test_missing_corpus_side_names_the_file_and_language(parallel_corpus, tmp_path: Path) -> None:
    prefix = parallel_corpus(["a"], ["x"])
    (tmp_path / "corpus.de").unlink()
    with pytest.raises(UserError) as error:
        list(read_parallel(prefix, "en", "de"))
    assert f"{prefix}.de" in str(error.value)
    assert "'de'" in str(error.value)


def test_corpus_file_prefers_plain_then_gzip(tmp_path: Path) -> None:
    write_lines(tmp_path / "c.en.gz", ["packed"])
    assert corpus_file(tmp_path / "c", "en") == tmp_path / "c.en.gz"
    write_lines(tmp_path / "c.en", ["plain"])
    assert corpus_file(tmp_path / "c", "en") == tmp_path / "c.en"


@pytest.mark.parametrize("n_src, n_tgt", [(7, 4), (4, 7)], ids=["source-longer", "target-longer"])
def test_unequal_line_counts_name_both_files_and_counts(parallel_corpus, n_src: int,
                                                        n_tgt: int) -> None:
    prefix = parallel_corpus([f"s{i}" for i in range(n_src)], [f"t{i}" for i in range(n_tgt)])
    with pytest.raises(UserError) as error:
        list(read_parallel(prefix, "en", "de"))
    message = str(error.value)
    assert f"{prefix}.en has {n_src} lines" in message
    assert f"{prefix}.de has {n_tgt}" in message


def test_equal_line_counts_pair_lines_in_order(parallel_corpus) -> None:
    prefix = parallel_corpus(["a", "", "c"], ["x", "y", ""])
    counter = ParallelCounter(LineCounter(), LineCounter())
    pairs = list(read_parallel(prefix, "en", "de", counter=counter))
    assert pairs == [("a", "x"), ("", "y"), ("c", "")]
    assert (counter.src.lines, counter.tgt.lines) == (3, 3)


def test_invalid_utf8_in_strict_mode_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.de", ["gut", "auch gut", b"schlecht \xff hier", "gut"])
    with pytest.raises(UserError) as error:
        list(read_lines(path, "strict"))
    assert f"{path}:3:" in str(error.value)


def test_invalid_utf8_in_a_parallel_corpus_names_the_side(parallel_corpus) -> None:
    prefix = parallel_corpus(["a", "b"], ["x", b"\xc3("])
    with pytest.raises(UserError, match=r"corpus\.de:2:"):
        list(read_parallel(prefix, "en", "de", "strict"))


def test_replace_mode_counts_replaced_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.de", [b"\xff", "fine", b"two \xfe bad \xfd bytes", "ok"])
    counter = LineCounter()
    lines = list(read_lines(path, "replace", counter))
    assert (counter.lines, counter.replaced) == (4, 2)
    assert lines[0] == "\ufffd"
    assert lines[1] == "fine"
    assert lines[2].count("\ufffd") == 2


def test_unknown_utf8_policy_is_a_user_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.txt", ["a"])
    with pytest.raises(UserError, match="ignore"):
        list(read_lines(path, "ignore"))


def test_truncated_gzip_is_a_user_error(tmp_path: Path) -> None:
    data = gzip.compress("".join(f"line {i}\n" for i in range(2000)).encode())
    path = tmp_path / "cut.en.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="unreadable") as error:
        list(read_lines(path))
    assert str(path) in str(error.value)


def test_corrupt_gzip_is_a_user_error(tmp_path: Path) -> None:
    path = corrupt_gzip(tmp_path / "bad.en.gz")
    with pytest.raises(UserError) as error:
        list(read_lines(path))
    assert str(path) in str(error.value)


def test_open_binary_reads_bytes(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.txt", ["ä"])
    with open_binary(path) as handle:
        assert handle.read() == "ä\n".encode()
