"""Hostile input through the command line: every mistake is one line, a non-zero exit, no
traceback, and no file of the user's is lost or half-written.

Exit codes: 2 for a user error (bad option, bad value, missing file or directory, full disk), 3 for
an internal error, 130 for an interrupt.
"""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tinytrans import atomic, cli
from tinytrans.cli import app
from tinytrans.train import train
from tinytrans.translate import Translator
from helpers_cli import assert_one_line_error, invoke
from toyrun import toy_config, write_corpus

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    train(toy_config(write_corpus(root / "train", 300), None, max_steps=10,
                     checkpoint_every=10), root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "train", 200)


# ---------------------------------------------------------------------------------------------
# 1. Every value is checked before any work starts

BAD_TRAIN_FLAGS = [
    ("--checkpoint-every", "0"), ("--update-freq", "0"), ("--lr", "-1"), ("--lr", "0"),
    ("--lr", "nan"), ("--max-time", "-5"), ("--max-time", "inf"), ("--max-steps", "0"),
    ("--max-epochs", "0"), ("--validate-every", "0"), ("--keep-last", "0"),
    ("--average-last", "0"), ("--patience", "0"), ("--batch-tokens", "0"),
    ("--warmup-steps", "-1"), ("--vocab-size", "3"), ("--max-length", "0"), ("--threads", "0"),
    ("--seed", "-1"), ("--dropout", "1"), ("--dropout", "-0.1"), ("--sampling-alpha", "1"),
    ("--sampling-alpha", "-0.1"),
]


@pytest.mark.parametrize("flag, value", BAD_TRAIN_FLAGS, ids=lambda x: x)
def test_a_bad_train_value_is_refused_before_anything_is_written(corpus: Path, tmp_path: Path,
                                                                 flag: str, value: str) -> None:
    output = tmp_path / "run"
    result = invoke("train", "--train", corpus, "--output", output, "--quiet", flag, value)
    assert_one_line_error(result, 2, f"{flag} = ", value.replace("inf", "inf"), "must be")
    assert not output.exists()  # not even the tokenizer was trained


def test_a_bad_toml_value_names_the_file_and_key(corpus: Path, tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("[model]\ndropout = 1.5\n")
    result = invoke("train", "--train", corpus, "--output", tmp_path / "run", "--config", toml)
    assert_one_line_error(result, 2, f"{toml}: 'model.dropout' = 1.5 must be in [0, 1)")
    assert not (tmp_path / "run").exists()


def test_keys_that_disagree_are_refused_together(corpus: Path, tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("[model]\nd_model = 100\nn_heads = 3\n")
    result = invoke("train", "--train", corpus, "--output", tmp_path / "run", "--config", toml)
    assert_one_line_error(result, 2, "'model.d_model' = 100 is not divisible by", "'model.n_heads' = 3")


@pytest.mark.parametrize("args, flag", [
    (["train", "--preset", "huge"], "--preset"),
    (["train", "--precision", "fp16"], "--precision"),
    (["train", "--device", "tpu"], "--device"),
    (["train", "--utf8-errors", "ignore"], "--utf8-errors"),
    (["train", "--lr-schedule", "cosine"], "--lr-schedule"),
    (["train", "--best-metric", "chrf"], "--best-metric"),
    (["tokenizer", "train", "-i", "x", "-o", "y", "--model-type", "char"], "--model-type"),
    (["translate", "-m", "x", "--precision", "int4"], "--precision"),
    (["translate", "-m", "x", "--beam", "many"], "--beam"),
    (["translate", "--bogus"], "--bogus"),
])
def test_choices_and_types_are_checked_by_the_cli_in_one_line(args: list[str], flag: str) -> None:
    line = assert_one_line_error(invoke(*args, "--output", "unused"), 2, flag)
    assert "--help" in line


@pytest.mark.parametrize("args, cause", [
    (["--beam", "0"], "--beam"), (["--nbest", "3", "--beam", "2"], "--nbest"),
    (["--lenpen", "-1"], "--lenpen"), (["--max-len-b", "0"], "--max-len-b"),
    (["--batch-tokens", "0"], "--batch-tokens"), (["--threads", "0"], "--threads"),
    (["--max-len-a", "1e9"], "--max-len-a"), (["--max-len-b", "100000000"], "--max-len-b"),
])
def test_bad_search_values_are_refused(run_dir: Path, args: list[str], cause: str) -> None:
    assert_one_line_error(invoke("translate", "-m", run_dir, *args, input="a\n"), 2, cause)


def test_choices_are_listed_in_help() -> None:
    text = " ".join(invoke("train", "--help").stdout.split())
    for choices in ("tiny|small|base", "auto|fp32|bf16", "auto|cpu|cuda", "strict|replace",
                    "inverse_sqrt|linear"):
        assert choices in text


def _commands(group=None, path=()):
    import typer.main
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


@pytest.mark.parametrize("path, command", list(_commands()), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_help_text_is_rendered_verbatim(path, command) -> None:
    """Square brackets and other markup characters in help texts reach the screen as written."""
    rendered = " ".join(invoke(*path, "--help").stdout.split())
    for param in command.params:
        if getattr(param, "help", None):
            assert " ".join(param.help.split()) in rendered, (path, param.help)
    assert "TOML file with [model], [data] and [train] tables." in " ".join(
        invoke("train", "--help").stdout.split())


# ---------------------------------------------------------------------------------------------
# 2. Errors from the operating system are user errors too

def test_output_in_a_missing_directory(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "dir" / "out.de"
    result = invoke("translate", "-m", run_dir, "--output", out, input="The man buys a car.\n")
    assert_one_line_error(result, 2, str(out), "does not exist")


def test_output_under_a_file(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out.de"
    assert_one_line_error(invoke("translate", "-m", run_dir, "--output", out, input="a\n"), 2,
                          str(out), "not a directory")


def test_output_that_is_a_directory(run_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(invoke("translate", "-m", run_dir, "--output", tmp_path, input="a\n"), 2,
                          str(tmp_path), "is a directory")


def test_input_that_is_a_directory(run_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(invoke("translate", "-m", run_dir, "--input", tmp_path), 2, str(tmp_path))


def test_a_full_disk_is_one_line_and_leaves_the_old_file(run_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.de"
    out.write_text("previous\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(atomic.os, "fsync", no_space)
    result = invoke("translate", "-m", run_dir, "--output", out, input="The man buys a car.\n")
    assert_one_line_error(result, 2, str(out), "No space left on device")
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.de"]  # no temporary file left


def test_an_os_error_anywhere_names_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "secret"))
    monkeypatch.setattr(cli, "_print_scores", denied)
    hyp = tmp_path / "h"
    hyp.write_text("a\n")
    result = invoke("evaluate", "--hyp", hyp, "--ref", hyp)
    assert_one_line_error(result, 2, f"{tmp_path / 'secret'}: Permission denied")


def test_an_unexpected_exception_is_an_internal_error_line(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    def broken(*args, **kwargs):
        raise ValueError("something impossible")
    monkeypatch.setattr(cli, "_print_scores", broken)
    hyp = tmp_path / "h"
    hyp.write_text("a\n")
    line = assert_one_line_error(invoke("evaluate", "--hyp", hyp, "--ref", hyp), 3,
                                 "internal error", "something impossible", "--debug")
    assert "ValueError" in line
    debug = invoke("--debug", "evaluate", "--hyp", hyp, "--ref", hyp)
    assert isinstance(debug.exception, ValueError)  # --debug lets the traceback through


# ---------------------------------------------------------------------------------------------
# 3. No command clobbers or half-writes a file

def _lines(n: int) -> str:
    sentences = ["The man buys a red car.", "Where is the dog?", "The woman sees the children."]
    return "".join(f"{sentences[i % 3]} {i}\n" for i in range(n))


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "hardlink"])
def test_output_naming_the_input_is_refused_and_the_input_survives(run_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   spelling: str) -> None:
    source = tmp_path / "input.en"
    text = _lines(5000)  # far larger than any read buffer
    source.write_text(text)
    monkeypatch.chdir(tmp_path)
    output = {"same": source, "dot": Path("./input.en"), "symlink": tmp_path / "link.en",
              "hardlink": tmp_path / "hard.en"}[spelling]
    if spelling == "symlink":
        output.symlink_to(source)
    if spelling == "hardlink":
        os.link(source, output)
    result = invoke("translate", "-m", run_dir, "--input", source, "--output", output)
    assert_one_line_error(result, 2, "--output", "is the input file")
    assert source.read_text() == text


def test_output_naming_stdin_is_refused(run_dir: Path, tmp_path: Path) -> None:
    """`tinytrans translate --output f < f`: a real process, so that stdin is the file itself."""
    source = tmp_path / "input.en"
    source.write_text(_lines(10))
    with open(source, "rb") as stdin:
        result = subprocess.run([sys.executable, "-m", "tinytrans", "translate", "-m", str(run_dir),
                                 "--output", str(source)], stdin=stdin, capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: --output {source}: is the input file; "
                                                  "write the translation elsewhere"]
    assert source.read_text() == _lines(10)


def test_a_failed_translation_leaves_the_previous_output_intact(run_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.de"
    out.write_text("previous translation\n")
    original = Translator.translate

    def fails_midway(self, lines, *args, **kwargs):
        for count, result in enumerate(original(self, lines, *args, **kwargs)):
            if count == 3:
                raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) in the middle of the file
            yield result
    monkeypatch.setattr(Translator, "translate", fails_midway)
    result = invoke("translate", "-m", run_dir, "--output", out, input=_lines(10))
    assert_one_line_error(result, 130, "interrupted")
    assert out.read_text() == "previous translation\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.de"]


def test_a_complete_translation_replaces_the_output(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.de"
    out.write_text("previous translation\n")
    result = invoke("translate", "-m", run_dir, "--output", out, "--beam", "1", input=_lines(7))
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.de"]


def test_input_files_are_closed(run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "input.en"
    source.write_text(_lines(5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = invoke("translate", "-m", run_dir, "--input", source, "--beam", "1",
                        "--output", tmp_path / "out.de")
        gc.collect()
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_save_hyp_is_written_whole_and_refuses_a_file(run_dir: Path, tmp_path: Path) -> None:
    test = write_corpus(tmp_path / "test", 12, "test")
    keep = tmp_path / "hyps"
    result = invoke("evaluate", "-m", run_dir, "--test", test, "--save-hyp", keep, "--beam", "1",
                    "--json")
    assert result.exit_code == 0, result.output
    assert [p.name for p in keep.iterdir()] == ["test.de.hyp"]
    assert len((keep / "test.de.hyp").read_text().splitlines()) == 12
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert_one_line_error(invoke("evaluate", "-m", run_dir, "--test", test, "--save-hyp", blocker),
                          2, "--save-hyp", "not a directory")


def test_tokenizer_train_output_in_a_missing_directory_is_created_or_named(tmp_path: Path,
                                                                          corpus: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = invoke("tokenizer", "train", "-i", f"{corpus}.en", "-o", tmp_path / "file" / "sp",
                    "--vocab-size", "100")
    assert_one_line_error(result, 2, str(tmp_path / "file"))


# ---------------------------------------------------------------------------------------------
# 4. --utf8-errors replace works end to end

@pytest.fixture
def invalid_utf8_corpus(tmp_path: Path) -> Path:
    prefix = write_corpus(tmp_path / "bad", 300)
    with open(f"{prefix}.de", "ab") as handle:
        handle.write(b"Der Mann kauft ein Auto \xff\xfe.\n")
    with open(f"{prefix}.en", "a") as handle:
        handle.write("The man buys a car.\n")
    return prefix


def test_tokenizer_train_takes_utf8_errors(invalid_utf8_corpus: Path, tmp_path: Path) -> None:
    files = ["-i", f"{invalid_utf8_corpus}.en", "-i", f"{invalid_utf8_corpus}.de"]
    strict = invoke("tokenizer", "train", *files, "-o", tmp_path / "sp", "--vocab-size", "200")
    assert_one_line_error(strict, 2, f"{invalid_utf8_corpus}.de:301", "--utf8-errors replace")
    replaced = invoke("tokenizer", "train", *files, "-o", tmp_path / "sp", "--vocab-size", "200",
                      "--utf8-errors", "replace")
    assert replaced.exit_code == 0, replaced.output


@pytest.mark.slow
def test_train_with_utf8_errors_replace_trains(invalid_utf8_corpus: Path, tmp_path: Path) -> None:
    common = ["train", "--train", invalid_utf8_corpus, "--valid", invalid_utf8_corpus,
              "--output", tmp_path / "run", "--quiet", "--max-steps", "2", "--vocab-size", "200",
              "--batch-tokens", "500", "--device", "cpu", "--threads", "1"]
    assert_one_line_error(invoke(*common), 2, "invalid UTF-8", "--utf8-errors replace")
    result = invoke(*common, "--utf8-errors", "replace")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "tokenizer.model").is_file()


# ---------------------------------------------------------------------------------------------
# 5. corpus check says where the problems are

def test_corpus_check_names_problem_lines_and_exit_codes(parallel_corpus) -> None:
    prefix = parallel_corpus(["a b", "", "c d", "a b"], ["x y", "z", b"\xff w", "x y"])
    result = invoke("corpus", "check", prefix)
    assert result.exit_code == 1  # not trainable as is: invalid UTF-8
    assert "empty en: line 2" in result.stderr
    assert "invalid UTF-8 in de: line 3" in result.stderr
    assert "duplicate pair: line 4" in result.stderr
    rows = [[cell.strip() for cell in line.split("│")] for line in result.stdout.splitlines()
            if "trainable pairs" in line]
    assert rows[0][1:3] == ["trainable pairs", "0"]  # the row agrees with the exit status


def test_corpus_check_json(parallel_corpus) -> None:
    import json
    prefix = parallel_corpus(["a b", "", "c d"], ["x y", "z", "w"])
    result = invoke("corpus", "check", prefix, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "trainable" and data["lines"]["src_empty"] == [2]
    assert data["trainable_pairs"] == 2


def test_corpus_check_bad_limits_are_usage_errors(parallel_corpus) -> None:
    prefix = parallel_corpus(["a"], ["b"])
    assert_one_line_error(invoke("corpus", "check", prefix, "--max-ratio", "0.5"), 2, "--max-ratio")
