"""The command line around data: `--version`, `tokenizer train/encode/decode`, `corpus check`, and
the ways `train` and `translate` refuse bad input before any model is built.

User errors must exit with code 2 and print one line on stderr that names the cause, never a
traceback. The `train` invocations here all fail before training; `--max-steps 1` bounds the
damage if one ever did not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import corrupt_gzip, head, write_lines
from helpers_cli import assert_one_line_error, invoke
from typer.testing import Result

from tinytrans import __version__
from tinytrans.errors import UserError

def assert_user_error(result: Result, *causes: str) -> None:
    """Exit code 2, nothing on stdout, one line on stderr naming every cause, no traceback."""
    assert_one_line_error(result, 2, *causes)
    assert result.stdout == ""


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"tinytrans {__version__}"


# ---------------------------------------------------------------------------------------------
# tokenizer

@pytest.fixture(scope="module")
def training_text(tmp_path_factory: pytest.TempPathFactory, bundled: Path) -> list[Path]:
    directory = tmp_path_factory.mktemp("cli_text")
    return [write_lines(directory / f"few.{lang}", head(bundled / f"train.{lang}", 300))
            for lang in ("en", "de")]


def test_tokenizer_train_writes_model_and_vocab(training_text: list[Path], tmp_path: Path) -> None:
    prefix = tmp_path / "out" / "sp"
    result = invoke("tokenizer", "train", "-i", training_text[0], "-i", training_text[1],
                    "-o", prefix, "--vocab-size", "200", "--model-type", "unigram")
    assert result.exit_code == 0, result.output
    assert Path(f"{prefix}.model").is_file()
    assert len(Path(f"{prefix}.vocab").read_text(encoding="utf-8").splitlines()) == 200
    assert "200 pieces" in " ".join(result.stderr.split())  # rich may wrap the line
    assert result.stdout == ""


def test_tokenizer_train_with_a_sample(training_text: list[Path], tmp_path: Path) -> None:
    result = invoke("tokenizer", "train", "-i", training_text[0], "-o", tmp_path / "sp",
                    "--vocab-size", "120", "--max-sentences", "200", "--seed", "4")
    assert result.exit_code == 0, result.output
    assert Path(f"{tmp_path / 'sp'}.model").is_file()


def test_tokenizer_train_missing_input(tmp_path: Path) -> None:
    missing = tmp_path / "absent.en"
    result = invoke("tokenizer", "train", "-i", missing, "-o", tmp_path / "sp",
                    "--vocab-size", "100")
    assert_user_error(result, str(missing))


def test_tokenizer_train_vocab_too_large(training_text: list[Path], tmp_path: Path) -> None:
    result = invoke("tokenizer", "train", "-i", training_text[0], "-o", tmp_path / "sp",
                    "--vocab-size", "60000")
    assert_user_error(result, "--vocab-size 60000")


def test_tokenizer_train_empty_input(tmp_path: Path) -> None:
    empty = write_lines(tmp_path / "empty.en", ["", ""])
    result = invoke("tokenizer", "train", "-i", empty, "-o", tmp_path / "sp", "--vocab-size", "100")
    assert_user_error(result, str(empty), "no non-empty lines")


def test_tokenizer_train_bad_model_type(training_text: list[Path], tmp_path: Path) -> None:
    result = invoke("tokenizer", "train", "-i", training_text[0], "-o", tmp_path / "sp",
                    "--model-type", "char")
    assert_user_error(result, "--model-type", "'char'")


def test_tokenizer_train_output_under_a_file(training_text: list[Path], tmp_path: Path) -> None:
    blocker = write_lines(tmp_path / "plain.txt", ["a file, not a directory"])
    result = invoke("tokenizer", "train", "-i", training_text[0], "-o", blocker / "sp",
                    "--vocab-size", "100")
    assert_user_error(result, str(blocker))


@pytest.fixture(scope="module")
def sentences(bundled: Path) -> list[str]:
    return head(bundled / "test.en", 40) + [""] + head(bundled / "test.de", 40)


def test_encode_then_decode_pieces_round_trips(small_tokenizer_prefix: Path,
                                               sentences: list[str]) -> None:
    model = f"{small_tokenizer_prefix}.model"
    encoded = invoke("tokenizer", "encode", "-m", model, input="\n".join(sentences) + "\n")
    assert encoded.exit_code == 0, encoded.output
    pieces = encoded.stdout.splitlines()
    assert len(pieces) == len(sentences)
    assert pieces[0] != sentences[0] and "\u2581" in pieces[0]
    decoded = invoke("tokenizer", "decode", "-m", model, input=encoded.stdout)
    assert decoded.exit_code == 0, decoded.output
    assert decoded.stdout.splitlines() == sentences


def test_encode_then_decode_ids_round_trips(small_tokenizer_prefix: Path, small_tokenizer,
                                            sentences: list[str]) -> None:
    model = f"{small_tokenizer_prefix}.model"
    encoded = invoke("tokenizer", "encode", "-m", model, "--ids", input="\n".join(sentences) + "\n")
    assert encoded.exit_code == 0, encoded.output
    ids = [[int(x) for x in line.split()] for line in encoded.stdout.splitlines()]
    assert ids == small_tokenizer.encode(sentences)
    decoded = invoke("tokenizer", "decode", "-m", model, "--ids", input=encoded.stdout)
    assert decoded.exit_code == 0, decoded.output
    assert decoded.stdout.splitlines() == sentences


def test_encode_reads_crlf_and_invalid_utf8(small_tokenizer_prefix: Path) -> None:
    model = f"{small_tokenizer_prefix}.model"
    result = invoke("tokenizer", "encode", "-m", model, input=b"The dog.\r\nbad \xff\r\n")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "\r" not in result.stdout
    assert "<stdin>:2" in result.stderr


@pytest.mark.parametrize("text, cause", [("4 5 x\n", "<stdin>:1: not a list of integer ids"),
                                         ("4 5\n4 99999\n", "<stdin>:2: id out of range")])
def test_decode_ids_rejects_bad_input(small_tokenizer_prefix: Path, text: str, cause: str) -> None:
    result = invoke("tokenizer", "decode", "-m", f"{small_tokenizer_prefix}.model", "--ids",
                    input=text)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert cause in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_encode_with_a_file_that_is_no_model(tmp_path: Path) -> None:
    fake = write_lines(tmp_path / "fake.model", ["not a model"])
    assert_user_error(invoke("tokenizer", "encode", "-m", fake, input="hello\n"), str(fake))


def test_encode_with_a_missing_model(tmp_path: Path) -> None:
    missing = tmp_path / "absent.model"
    assert_user_error(invoke("tokenizer", "encode", "-m", missing, input="hello\n"), str(missing))


# ---------------------------------------------------------------------------------------------
# corpus check

def test_corpus_check_passes_on_the_bundled_test_split(bundled: Path) -> None:
    result = invoke("corpus", "check", bundled / "test")
    assert result.exit_code == 0, result.output
    assert "pairs" in result.stdout and "1,000" in result.stdout
    assert "problem" not in result.stderr


def test_corpus_check_fails_on_an_all_empty_corpus(parallel_corpus) -> None:
    prefix = parallel_corpus(["", ""], ["", ""])
    result = invoke("corpus", "check", prefix)
    assert result.exit_code == 1
    assert "no pair survives" in result.stderr
    assert "Traceback" not in result.output


def test_corpus_check_fails_on_a_corpus_without_lines(parallel_corpus) -> None:
    result = invoke("corpus", "check", parallel_corpus([], []))
    assert result.exit_code == 1
    assert "no lines" in result.stderr


def test_corpus_check_fails_on_invalid_utf8(parallel_corpus) -> None:
    prefix = parallel_corpus(["a b", "c"], [b"x \xff", "y"], src="fr", tgt="cs")
    result = invoke("corpus", "check", prefix, "--src", "fr", "--tgt", "cs")
    assert result.exit_code == 1
    assert "invalid UTF-8" in result.stderr


def test_corpus_check_strict_utf8_is_a_user_error(parallel_corpus) -> None:
    prefix = parallel_corpus(["a b", "c"], [b"x \xff", "y"])
    result = invoke("corpus", "check", prefix, "--utf8-errors", "strict")
    assert_user_error(result, f"{prefix}.de:1:")


def test_corpus_check_corrupt_gzip(parallel_corpus, tmp_path: Path) -> None:
    prefix = parallel_corpus(["a"], ["x"])
    (tmp_path / "corpus.en").unlink()
    corrupt_gzip(tmp_path / "corpus.en.gz")
    assert_user_error(invoke("corpus", "check", prefix), f"{prefix}.en.gz")


def test_corpus_check_missing_files(tmp_path: Path) -> None:
    assert_user_error(invoke("corpus", "check", tmp_path / "nothing"), f"{tmp_path / 'nothing'}.en")


def test_corpus_check_unequal_lengths(parallel_corpus) -> None:
    prefix = parallel_corpus(["a", "b", "c"], ["x", "y"])
    result = invoke("corpus", "check", prefix)
    assert_user_error(result, f"{prefix}.en has 3 lines", f"{prefix}.de has 2")


# ---------------------------------------------------------------------------------------------
# train and translate: errors before any training

def train(output: Path, *args: str | Path) -> Result:
    return invoke("train", "-o", output, "--max-steps", "1", "--device", "cpu", "--quiet", *args)


def test_train_needs_a_corpus(tmp_path: Path) -> None:
    assert_user_error(train(tmp_path / "run"), "--train")


def test_train_with_missing_corpus_files(tmp_path: Path) -> None:
    prefix = tmp_path / "nowhere" / "train"
    assert_user_error(train(tmp_path / "run", "--train", prefix), f"{prefix}.en")


def test_train_with_unequal_lengths(parallel_corpus, small_tokenizer_prefix: Path,
                                    tmp_path: Path) -> None:
    prefix = parallel_corpus(["a dog", "a cat", "a man"], ["ein Hund", "eine Katze"])
    result = train(tmp_path / "run", "--train", prefix,
                   "--tokenizer", f"{small_tokenizer_prefix}.model")
    assert_user_error(result, f"{prefix}.en has 3 lines", f"{prefix}.de has 2")


def test_train_dropout_and_sampling_flags_reach_the_saved_config(
        parallel_corpus, small_tokenizer_prefix: Path, tmp_path: Path) -> None:
    from tinytrans.rundir import load_run_config
    prefix = parallel_corpus(["a dog", "a cat", "a man"], ["ein Hund", "eine Katze", "ein Mann"])
    result = train(tmp_path / "run", "--train", prefix, "--preset", "small", "--dropout", "0.3",
                   "--sampling-alpha", "0.05", "--best-metric", "loss",
                   "--tokenizer", f"{small_tokenizer_prefix}.model")
    assert result.exit_code == 0, result.output
    saved = load_run_config(tmp_path / "run")
    assert saved.model.dropout == 0.3 and saved.model.d_model == 128  # over the preset's 0.1
    assert saved.data.sampling_alpha == 0.05 and saved.train.best_metric == "loss"


def test_train_with_a_bad_preset(parallel_corpus, tmp_path: Path) -> None:
    prefix = parallel_corpus(["a"], ["x"])
    assert_user_error(train(tmp_path / "run", "--train", prefix, "--preset", "huge"), "'huge'")


def test_train_with_an_unknown_toml_key(parallel_corpus, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[model]\nd_modle = 64\n")
    result = train(tmp_path / "run", "--train", parallel_corpus(["a"], ["x"]), "--config", config)
    assert_user_error(result, str(config), "'model.d_modle'")


def test_train_with_an_unknown_toml_section(parallel_corpus, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[optimizer]\nlr = 0.1\n")
    result = train(tmp_path / "run", "--train", parallel_corpus(["a"], ["x"]), "--config", config)
    assert_user_error(result, str(config), "[optimizer]")


def test_train_with_a_wrongly_typed_toml_value(parallel_corpus, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[train]\nbatch_tokens = "many"\n')
    result = train(tmp_path / "run", "--train", parallel_corpus(["a"], ["x"]), "--config", config)
    assert_user_error(result, "'train.batch_tokens'")


def test_train_with_invalid_toml(parallel_corpus, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[train\n")
    result = train(tmp_path / "run", "--train", parallel_corpus(["a"], ["x"]), "--config", config)
    assert_user_error(result, str(config), "not valid TOML")


def test_train_with_a_directory_as_config(parallel_corpus, tmp_path: Path) -> None:
    result = train(tmp_path / "run", "--train", parallel_corpus(["a"], ["x"]), "--config", tmp_path)
    assert_user_error(result, str(tmp_path))


@pytest.mark.parametrize("name", ["data[v2]", "data[/v2]"])
def test_error_messages_are_printed_verbatim(tmp_path: Path, name: str) -> None:
    # Paths are the user's, not rich markup: square brackets must survive (and not crash).
    prefix = tmp_path / name / "train"
    assert_user_error(invoke("corpus", "check", prefix), f"{prefix}.en")


def test_train_into_a_non_run_directory(parallel_corpus, tmp_path: Path) -> None:
    output = tmp_path / "busy"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    result = train(output, "--train", parallel_corpus(["a"], ["x"]))
    assert_user_error(result, str(output), "not a tinytrans run directory")
    assert [p.name for p in output.iterdir()] == ["notes.txt"]


def test_translate_with_a_non_run_directory(tmp_path: Path) -> None:
    result = invoke("translate", "--model", tmp_path, input="hello\n")
    assert_user_error(result, str(tmp_path), "not a tinytrans run directory")


def test_translate_with_a_bad_beam(tmp_path: Path) -> None:
    result = invoke("translate", "--model", tmp_path, "--beam", "0", input="hello\n")
    assert_user_error(result, "--beam")


def test_debug_shows_the_exception_instead(tmp_path: Path) -> None:
    result = invoke("--debug", "translate", "--model", tmp_path, input="hello\n")
    assert result.exit_code != 2
    assert isinstance(result.exception, UserError)
