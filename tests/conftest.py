"""Shared fixtures: the bundled corpus, Multi30k when it is present, a small tokenizer, and a
helper that writes tiny parallel corpora into a test's tmp_path."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from tinytrans.cli import DEBUG_ENV
from tinytrans.hardware import CACHE_ENV
from tinytrans.tokenizer import Tokenizer, train_tokenizer
from tinytrans.train import train
from toyrun import varied_config, write_corpus

TESTS = Path(__file__).resolve().parent
BUNDLED = TESTS.parent / "corpora" / "en-de"
MULTI30K = TESTS.parents[1] / "shared" / "corpora" / "multi30k"

SMALL_TOKENIZER_LINES = 3000  # per language: enough for every character of the synthetic corpus
SMALL_VOCAB = 500

Line = str | bytes
ParallelCorpus = Callable[..., Path]


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TINYTRANS_DEBUG in the environment (a user's way to see tracebacks) must not change
    the tests' one-line errors."""
    monkeypatch.setenv(DEBUG_ENV, "")  # recorded first, so that undoing removes the variable
    monkeypatch.delenv(DEBUG_ENV)


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> None:
    """Toy models run fastest on one thread (two threads' start-up costs more than their work),
    and the tests own their process: `tinytrans train` would set it from its config the same way."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The measured precision verdicts go to a cache of the test session's own, never to the
    user's (subprocesses such as torchrun's inherit it through the environment)."""
    directory = tmp_path_factory.mktemp("cache")
    os.environ[CACHE_ENV] = str(directory)
    return directory


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The training tests' corpus: 400 bundled training pairs and 30 validation pairs, as
    (train prefix, valid prefix). A test file may define its own `corpus` instead."""
    root = tmp_path_factory.mktemp("corpus")
    return write_corpus(root / "train", 400), write_corpus(root / "valid", 30, "valid")


@pytest.fixture(scope="session")
def varied_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained for about half a minute (4,000 bundled pairs, 500 updates): it translates
    badly, but every sentence differently. Shared by the API and export tests."""
    root = tmp_path_factory.mktemp("varied")
    train(varied_config(write_corpus(root / "train", 4000), 500, "varied run"), root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def bundled() -> Path:
    """The bundled synthetic English-German corpus: {train,valid,test}.{en,de}."""
    return BUNDLED


@pytest.fixture(scope="session")
def multi30k() -> Path:
    """Multi30k (gzipped train/val/test_2016_flickr), which only some checkouts have."""
    if not (MULTI30K / "train.en.gz").is_file():
        pytest.skip(f"Multi30k is not available at {MULTI30K}")
    return MULTI30K


def head(path: Path, n: int) -> list[str]:
    """The first n lines of a UTF-8 text file, without line ends."""
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for _, line in zip(range(n), handle)]


@pytest.fixture(scope="session")
def small_tokenizer_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PREFIX of a joint BPE model (PREFIX.model, PREFIX.vocab) trained on bundled train text."""
    directory = tmp_path_factory.mktemp("small_tokenizer")
    inputs = []
    for lang in ("en", "de"):
        sample = directory / f"sample.{lang}"
        sample.write_text("\n".join(head(BUNDLED / f"train.{lang}", SMALL_TOKENIZER_LINES)) + "\n",
                          encoding="utf-8")
        inputs.append(sample)
    prefix = directory / "joint"
    train_tokenizer(inputs, prefix, SMALL_VOCAB)
    return prefix


@pytest.fixture(scope="session")
def small_tokenizer(small_tokenizer_prefix: Path) -> Tokenizer:
    return Tokenizer.load(f"{small_tokenizer_prefix}.model")


def write_lines(path: Path, lines: Sequence[Line], newline: bytes = b"\n") -> Path:
    """Write lines (str as UTF-8, bytes verbatim) each followed by `newline`; .gz is gzipped."""
    data = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + newline
                    for line in lines)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def corrupt_gzip(path: Path) -> Path:
    """A gzip file whose header is intact but whose compressed data is garbled."""
    data = bytearray(gzip.compress("".join(f"line {i}\n" for i in range(2000)).encode()))
    for k in range(30, 60):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def parallel_corpus(tmp_path: Path) -> ParallelCorpus:
    """parallel_corpus(src_lines, tgt_lines, name="corpus", src="en", tgt="de", gz=False) -> prefix.

    Writes tmp_path/NAME.SRC and tmp_path/NAME.TGT (with .gz when asked) and returns the prefix
    tmp_path/NAME, as the library's read_parallel expects it. Lines may be bytes, to plant
    invalid UTF-8.
    """
    def write(src_lines: Sequence[Line], tgt_lines: Sequence[Line], name: str = "corpus",
              src: str = "en", tgt: str = "de", gz: bool = False) -> Path:
        suffix = ".gz" if gz else ""
        write_lines(tmp_path / f"{name}.{src}{suffix}", src_lines)
        write_lines(tmp_path / f"{name}.{tgt}{suffix}", tgt_lines)
        return tmp_path / name
    return write
