"""Prepared corpora: the same pairs as encoding at the start of training, streamed, checked on
every load, and trained on exactly as the text they came from."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tinytrans.prepared
from tinytrans.cli import app
from tinytrans.config import DataConfig
from tinytrans.data import FilterConfig, encode_parallel
from tinytrans.errors import UserError
from tinytrans.prepared import MANIFEST, encoded_chunks, open_prepared, prepare
from tinytrans.rundir import load_run_config
from tinytrans.textio import read_parallel
from tinytrans.tokenizer import Tokenizer, train_tokenizer
from tinytrans.train import train
from tinytrans.validation import load_validation_data
from toyrun import toy_config, write_corpus

# Pairs that the training filters drop, each for one reason, mixed into the bundled pairs.
DROPPED = [("", "leer"), (" ".join(f"w{i}" for i in range(80)), " ".join(f"W{i}" for i in range(80))),
           ("a b c d e f g h i j k l", "ja")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """400 bundled training pairs with DROPPED planted among them; 30 validation pairs, one of
    them empty on the source side."""
    root = tmp_path_factory.mktemp("corpus")
    train, valid = write_corpus(root / "train", 400), write_corpus(root / "valid", 30, "valid")
    for prefix, planted, at in ((train, DROPPED, (3, 150, 399)), (valid, [("", "Nichts")], (7,))):
        lines = {lang: Path(f"{prefix}.{lang}").read_text(encoding="utf-8").splitlines()
                 for lang in ("en", "de")}
        for (src, tgt), index in zip(planted, at):
            lines["en"].insert(index, src)
            lines["de"].insert(index, tgt)
        for lang in ("en", "de"):
            Path(f"{prefix}.{lang}").write_text("\n".join(lines[lang]) + "\n", encoding="utf-8")
    return train, valid


@pytest.fixture(scope="module")
def tokenizer_model(corpus) -> Path:
    train = corpus[0]
    train_tokenizer([Path(f"{train}.en"), Path(f"{train}.de")], train.parent / "spm", 300)
    return train.parent / "spm.model"


def data_config(corpus, tokenizer_model: Path | None = None, **overrides) -> DataConfig:
    return DataConfig(train=str(corpus[0]), valid=str(corpus[1]), vocab_size=300, max_length=64,
                      tokenizer=str(tokenizer_model) if tokenizer_model else None, **overrides)


@pytest.fixture(scope="module")
def prepared_dir(corpus, tokenizer_model, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "data"
    prepare(data_config(corpus, tokenizer_model), output, workers=1)
    return output


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# The same pairs as encode_parallel, in the same order

@pytest.mark.parametrize("workers", [1, 2])
def test_prepared_corpus_holds_what_training_would_encode(corpus, tokenizer_model, tmp_path,
                                                          monkeypatch, workers):
    monkeypatch.setattr(tinytrans.prepared, "ENCODE_CHUNK", 37)  # many chunks, one order
    prepare(data_config(corpus, tokenizer_model), tmp_path / "data", workers=workers)
    tok = Tokenizer.load(tokenizer_model)
    expected = encode_parallel(read_parallel(corpus[0], "en", "de"), tok, tok, FilterConfig(64, 3.0))
    got = open_prepared(tmp_path / "data")
    for side in ("src", "tgt"):
        mapped, wanted = getattr(got.train, side), getattr(expected, side)
        assert isinstance(mapped.ids, np.memmap)  # read from disk on demand, not loaded
        assert mapped.ids.dtype == wanted.ids.dtype
        np.testing.assert_array_equal(mapped.ids, wanted.ids)
        np.testing.assert_array_equal(mapped.offsets, wanted.offsets)
    stats = got.manifest["splits"]["train"]
    assert (stats["read"], stats["kept"], stats["empty"], stats["too_long"], stats["bad_ratio"]) \
        == (403, 400, 1, 1, 1)


def test_prepared_validation_set_equals_the_one_training_reads(corpus, tokenizer_model,
                                                               prepared_dir):
    tok = Tokenizer.load(tokenizer_model)
    cfg = toy_config(*corpus)
    expected = load_validation_data(cfg, tok, tok, lambda event: None)[""]  # one pair: one set
    got = open_prepared(prepared_dir).valid
    assert got.references == expected.references and len(got.references) == 30  # the empty one left out
    for side in ("src", "tgt"):
        np.testing.assert_array_equal(getattr(got.corpus, side).ids, getattr(expected.corpus, side).ids)
        np.testing.assert_array_equal(getattr(got.corpus, side).offsets,
                                      getattr(expected.corpus, side).offsets)


def test_manifest_records_sources_tokenizer_filters_and_counts(corpus, tokenizer_model, prepared_dir):
    manifest = json.loads((prepared_dir / MANIFEST).read_text())
    assert manifest["tokenizer"]["files"] == {"tokenizer.model": sha256(tokenizer_model)}
    assert (manifest["data"]["max_length"], manifest["data"]["max_ratio"]) == (64, 3.0)
    source = manifest["sources"]["train"]["en"]
    assert source["bytes"] == Path(f"{corpus[0]}.en").stat().st_size
    assert source["sha256"] == sha256(Path(f"{corpus[0]}.en"))
    ids = manifest["splits"]["train"]["files"]["src"]["ids"]
    assert ids["sha256"] == sha256(prepared_dir / ids["file"])
    assert ids["count"] * np.dtype(ids["dtype"]).itemsize == (prepared_dir / ids["file"]).stat().st_size


def test_encoding_reads_only_a_bounded_way_ahead_of_the_writer(tokenizer_model, monkeypatch):
    """Streaming: the pairs read so far never run more than the chunks in flight ahead of the
    chunks handed on, however long the corpus (so memory does not grow with it)."""
    monkeypatch.setattr(tinytrans.prepared, "ENCODE_CHUNK", 10)
    read = [0]

    def pairs():
        for i in range(1000):
            read[0] += 1
            yield f"sentence {i}", f"Satz {i}"

    tok = Tokenizer.load(tokenizer_model)
    workers = 2
    ahead = (tinytrans.prepared.IN_FLIGHT_PER_WORKER * workers + 1) * 10
    handed_on = 0
    for chunk in encoded_chunks(pairs(), tok, tok, FilterConfig(), workers):
        handed_on += len(chunk)
        assert read[0] - handed_on <= ahead
    assert handed_on == 1000


# ---------------------------------------------------------------------------------------------
# Training from a prepared corpus

def test_training_on_prepared_data_equals_training_on_its_text(corpus, tokenizer_model,
                                                               prepared_dir, tmp_path):
    text_cfg = toy_config(*corpus, max_steps=6, validate_every=3)
    text_cfg = replace(text_cfg, data=replace(text_cfg.data, tokenizer=str(tokenizer_model),
                                              max_length=64))
    from_text = train(text_cfg, tmp_path / "text")
    events = []
    prepared_cfg = replace(text_cfg, data=DataConfig(prepared=str(prepared_dir)))
    from_prepared = train(prepared_cfg, tmp_path / "prepared", report=events.append)
    assert from_prepared.state == replace(from_text.state, elapsed=from_prepared.state.elapsed)
    assert from_prepared.last_validation["bleu"] == from_text.last_validation["bleu"]
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text()
                                      .splitlines()) if r["event"] == "log"] for run in ("text", "prepared")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    data_event = next(e for e in events if e["event"] == "data")
    assert (data_event["read"], data_event["kept"]) == (403, 400)
    # the run directory records the tokenizer and the data settings the corpus was made with
    assert sha256(tmp_path / "prepared" / "tokenizer.model") == sha256(tokenizer_model)
    saved = load_run_config(tmp_path / "prepared")
    assert (saved.data.prepared, saved.data.max_length, saved.data.train) == \
        (str(prepared_dir), 64, str(corpus[0]))


def test_a_run_resumed_with_data_encoded_by_another_tokenizer_is_refused(
        corpus, tokenizer_model, tmp_path):
    data = tmp_path / "data"
    prepare(data_config(corpus, tokenizer_model), data, workers=1)
    cfg = toy_config(*corpus, max_steps=2, validate_every=2)
    cfg = replace(cfg, data=DataConfig(prepared=str(data)))
    train(cfg, tmp_path / "run")
    # the same directory prepared again, with another tokenizer of the same size
    other = write_corpus(tmp_path / "other", 400, skip=5000)
    other_model = train_tokenizer([Path(f"{other}.en"), Path(f"{other}.de")], tmp_path / "other-spm", 300)
    assert other_model.model_proto != Tokenizer.load(tokenizer_model).model_proto
    prepare(data_config(corpus, tmp_path / "other-spm.model"), data, workers=1)
    with pytest.raises(UserError, match="another tokenizer") as error:
        train(replace(cfg, train=replace(cfg.train, max_steps=4)), tmp_path / "run")
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# A stale or foreign directory is refused, never trained on

def copy_of(prepared_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in prepared_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def manifest_edit(change):
    def edit(directory: Path) -> None:
        manifest = json.loads((directory / MANIFEST).read_text())
        change(manifest)
        (directory / MANIFEST).write_text(json.dumps(manifest))
    return edit


@pytest.mark.parametrize("damage, message", [
    (lambda d: truncate(d / "train.tgt.ids"), "train.tgt.ids: truncated"),
    (lambda d: flip_a_byte(d / "train.src.ids"), "train.src.ids: changed since it was prepared"),
    (lambda d: flip_a_byte(d / "valid.ref"), "valid.ref: changed since it was prepared"),
    (lambda d: (d / "train.src.offsets").unlink(), "train.src.offsets: missing"),
    (lambda d: flip_a_byte(d / "tokenizer.model"), "is not the tokenizer this corpus was encoded with"),
    (lambda d: (d / MANIFEST).unlink(), "not a prepared corpus .no manifest.json"),
    (lambda d: (d / MANIFEST).write_text("{"), "unreadable manifest"),
    (manifest_edit(lambda m: m.update(version=99)), "format version 99"),
    (manifest_edit(lambda m: m["splits"]["train"].update(kept=7)), "manifest counts 7 pairs"),
    (manifest_edit(lambda m: m["splits"]["train"].pop("files")), "'splits.train.files' is missing"),
])
def test_a_damaged_directory_is_refused_in_one_line(prepared_dir, tmp_path, damage, message):
    copy = copy_of(prepared_dir, tmp_path)
    damage(copy)
    with pytest.raises(UserError, match=message) as error:
        open_prepared(copy)
    assert "\n" not in str(error.value)


def write_manifest(text: str | bytes):
    def write(directory: Path) -> None:
        (directory / MANIFEST).write_bytes(text if isinstance(text, bytes) else text.encode())
    return write


def cut_off(directory: Path) -> None:
    text = (directory / MANIFEST).read_bytes()
    (directory / MANIFEST).write_bytes(text[: len(text) // 2])


def link_out(directory: Path) -> None:
    """train.src.ids replaced by a link to a file outside the directory, with the same bytes
    (so that its size and checksum are right)."""
    outside = directory.parent / "elsewhere.ids"
    outside.write_bytes((directory / "train.src.ids").read_bytes())
    (directory / "train.src.ids").unlink()
    (directory / "train.src.ids").symlink_to(outside)


def ids_beyond_the_vocabulary(directory: Path) -> None:
    """An id no tokenizer of the corpus has, with the manifest's checksum made to match."""
    ids = np.fromfile(directory / "train.src.ids", np.uint16)
    ids[5] = 60000
    ids.tofile(directory / "train.src.ids")
    manifest_edit(lambda m: m["splits"]["train"]["files"]["src"]["ids"].update(
        sha256=sha256(directory / "train.src.ids")))(directory)


def src_ids(**change):
    return manifest_edit(lambda m: m["splits"]["train"]["files"]["src"]["ids"].update(change))


# (what is done to the directory, the file the error names, what it says)
CORRUPT_MANIFESTS = {
    "no-splits": (manifest_edit(lambda m: m.pop("splits")), MANIFEST, "'splits' is missing"),
    "no-tokenizer": (manifest_edit(lambda m: m.pop("tokenizer")), MANIFEST,
                     "'tokenizer' is missing"),
    "no-data": (manifest_edit(lambda m: m.pop("data")), MANIFEST, "'data' is missing"),
    "no-references": (manifest_edit(lambda m: m["splits"]["valid"]["files"].pop("references")),
                      MANIFEST, "'splits.valid.files.references' is missing"),
    "kept-as-text": (manifest_edit(lambda m: m["splits"]["train"].update(kept="400")), MANIFEST,
                     "'splits.train.kept' must be an integer"),
    "kept-as-boolean": (manifest_edit(lambda m: m["splits"]["train"].update(kept=True)),
                        MANIFEST, "'splits.train.kept' must be an integer"),
    "count-as-float": (src_ids(count=1.5), MANIFEST,
                       "'splits.train.files.src.ids.count' must be an integer"),
    "valid-split-missing": (manifest_edit(lambda m: m["splits"].pop("valid")), MANIFEST,
                            "'splits.valid' must be there exactly when 'data.valid'"),
    "split-as-list": (manifest_edit(lambda m: m["splits"].update(train=[])), MANIFEST,
                      "'splits.train' must be a table"),
    "files-as-list": (manifest_edit(lambda m: m["tokenizer"].update(files=["tokenizer.model"])),
                      MANIFEST, "'tokenizer.files' must be a table"),
    "sources-as-text": (manifest_edit(lambda m: m["sources"].update(train="x")), MANIFEST,
                        "'sources.train' must be a table"),
    "flag-as-text": (manifest_edit(lambda m: m["data"].update(joint_vocab="yes")), MANIFEST,
                     "'data.joint_vocab' must be true or false"),
    "max-length-zero": (manifest_edit(lambda m: m["data"].update(max_length=0)), MANIFEST,
                        "'data.max_length' must be an integer >= 1"),
    "ratio-below-one": (manifest_edit(lambda m: m["data"].update(max_ratio=0.5)), MANIFEST,
                        "'data.max_ratio' must be in \\[1, 1,000\\]"),
    "unknown-policy": (manifest_edit(lambda m: m["data"].update(utf8_errors="ignore")), MANIFEST,
                       "'data.utf8_errors' must be one of strict, replace"),
    "object-dtype": (src_ids(dtype="object"), MANIFEST,
                     "'splits.train.files.src.ids.dtype' must be one of"),
    "parent-path": (src_ids(file="../x"), MANIFEST,
                    "'splits.train.files.src.ids.file' must be a plain file name"),
    "absolute-path": (manifest_edit(lambda m: m["splits"]["valid"]["files"]["references"].update(
        file="/etc/passwd")), MANIFEST, "'splits.valid.files.references.file' must be a plain"),
    "tokenizer-outside": (manifest_edit(lambda m: m["tokenizer"].update(
        files={"../tokenizer.model": "0" * 64})), MANIFEST, "'tokenizer.files' must list"),
    "vocabulary-size": (manifest_edit(lambda m: m["tokenizer"].update(vocab_size=5000)), MANIFEST,
                        "'tokenizer.vocab_size'"),
    "not-json": (write_manifest("this is not JSON"), MANIFEST, "unreadable manifest"),
    "cut-off": (cut_off, MANIFEST, "unreadable manifest"),
    "not-utf8": (write_manifest(b"\xff\xfe{}"), MANIFEST, "unreadable manifest"),
    "nested-too-deep": (write_manifest("[" * 100_000), MANIFEST, "unreadable manifest"),
    "json-array": (write_manifest("[]"), MANIFEST, "not a tinytrans prepared-corpus manifest"),
    "json-number": (write_manifest("42"), MANIFEST, "not a tinytrans prepared-corpus manifest"),
    "link-outside": (link_out, "train.src.ids", "links to .* outside the prepared corpus"),
    "ids-beyond-vocabulary": (ids_beyond_the_vocabulary, "train.src.ids",
                              "holds piece ids outside the tokenizer's 300"),
}


@pytest.mark.parametrize("case", CORRUPT_MANIFESTS)
def test_a_corrupt_manifest_is_one_line_naming_the_file_and_field(prepared_dir, tmp_path, case):
    """The manifest is untrusted input: every corruption is a UserError that names the file and
    the field (exit 2 from train --data), never a KeyError, and never a file from elsewhere."""
    damage, name, message = CORRUPT_MANIFESTS[case]
    copy = copy_of(prepared_dir, tmp_path)
    damage(copy)
    with pytest.raises(UserError, match=re.escape(f"{copy / name}: ") + message) as error:
        open_prepared(copy)
    assert "\n" not in str(error.value)
    config = tmp_path / "toy.toml"  # never trained on; tiny in case it were
    config.write_text('[model]\nd_model = 32\nn_heads = 2\nd_ff = 64\nn_encoder_layers = 1\n'
                      'n_decoder_layers = 1\n[train]\nbatch_tokens = 600\nthreads = 1\n')
    result = CliRunner().invoke(app, ["train", "--data", str(copy), "--config", str(config),
                                      "--max-steps", "1", "--output", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert f"{copy / name}: " in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_directory_whose_source_corpus_changed_is_stale(corpus, tmp_path):
    train_prefix = write_corpus(tmp_path / "src" / "train", 50)
    prepare(DataConfig(train=str(train_prefix), vocab_size=200), tmp_path / "data", workers=1)
    open_prepared(tmp_path / "data")  # fine as it is
    with open(f"{train_prefix}.de", "a", encoding="utf-8") as handle:
        handle.write("Eine Zeile mehr.\n")
    with pytest.raises(UserError, match=r"stale: .*train\.de had"):
        open_prepared(tmp_path / "data")


# ---------------------------------------------------------------------------------------------
# A failed prepare loses nothing; an input is never written over

def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of `directory`: its bytes and its modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


def invalid_utf8_corpus(corpus, tmp_path: Path) -> Path:
    """The training corpus with invalid UTF-8 at line 301 of 403: found half-way through."""
    lines = Path(f"{corpus[0]}.en").read_bytes().splitlines(keepends=True)
    (tmp_path / "broken.en").write_bytes(b"".join(lines[:300]) + b"\xff\xfe\n" + b"".join(lines[301:]))
    (tmp_path / "broken.de").write_bytes(Path(f"{corpus[0]}.de").read_bytes())
    return tmp_path / "broken"


def interrupted_while_encoding_validation(*args, **kwargs):
    raise KeyboardInterrupt  # Ctrl-C with the training arrays written, the validation set not


@pytest.mark.parametrize("way", ["missing-train", "missing-valid", "missing-tokenizer",
                                 "invalid-utf8-half-way", "interrupted"])
def test_a_failed_prepare_leaves_the_old_directory_as_it_was(corpus, tokenizer_model, prepared_dir,
                                                             tmp_path, monkeypatch, way):
    copy = copy_of(prepared_dir, tmp_path)
    broken = invalid_utf8_corpus(corpus, tmp_path)
    before, beside = snapshot(copy), {p.name for p in tmp_path.iterdir()}
    data = data_config(corpus, tokenizer_model)
    if way == "interrupted":
        monkeypatch.setattr(tinytrans.prepared, "_prepare_valid",
                            interrupted_while_encoding_validation)
        with pytest.raises(KeyboardInterrupt):
            prepare(data, copy, workers=1)
    else:
        flags = {"missing-train": ["--train", f"{corpus[0]}x"],  # a typo
                 "missing-valid": ["--valid", f"{corpus[1]}x"],
                 "missing-tokenizer": ["--tokenizer", str(tmp_path / "spm.model")],
                 "invalid-utf8-half-way": ["--train", str(broken)]}
        args = {"--train": str(corpus[0]), "--valid": str(corpus[1]),
                "--tokenizer": str(tokenizer_model)}
        args.update([flags[way]])
        result = CliRunner().invoke(app, ["prepare", *itertools.chain(*args.items()),
                                          "--workers", "1", "--output", str(copy)])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1
        named = "invalid UTF-8" if way == "invalid-utf8-half-way" else flags[way][1]  # the typo
        assert named in result.stderr
    assert snapshot(copy) == before  # every file, byte for byte, not even touched
    assert {p.name for p in tmp_path.iterdir()} == beside  # no half-built directory left
    open_prepared(copy)  # still a good corpus: what train --data checks before it trains


def test_preparing_again_replaces_the_directory_whole(corpus, tokenizer_model, prepared_dir,
                                                      tmp_path):
    copy = copy_of(prepared_dir, tmp_path)
    (copy / ".train.src.ids.stream-99").write_bytes(b"left by a killed prepare")
    manifest = prepare(replace(data_config(corpus, tokenizer_model), max_length=20), copy, workers=1)
    assert open_prepared(copy).manifest == manifest
    assert manifest["splits"]["train"]["kept"] < 400  # the new corpus, not the old
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]
    assert {p.name for p in tmp_path.iterdir()} == {"copy"}  # nothing left beside it


@pytest.mark.parametrize("layout", ["corpus-named-like-outputs", "hidden-corpus", "tokenizer",
                                    "hard-link"])
def test_prepare_never_writes_over_its_own_input(corpus, tokenizer_model, prepared_dir, tmp_path,
                                                 layout):
    """An input that preparing into OUT would replace: inside OUT, or the same file as one of
    the names prepare writes there. Refused in one line; the input and OUT stay as they were."""
    out = copy_of(prepared_dir, tmp_path)
    args = ["--train", str(corpus[0]), "--tokenizer", str(tokenizer_model)]
    if layout == "corpus-named-like-outputs":  # OUT/train.src.ids is the corpus' source side
        for lang, side in (("en", "src"), ("de", "tgt")):
            (out / f"train.{side}.ids").write_bytes(Path(f"{corpus[0]}.{lang}").read_bytes())
        args = ["--train", str(out / "train"), "--src", "src.ids", "--tgt", "tgt.ids",
                "--tokenizer", str(tokenizer_model)]
    elif layout == "hidden-corpus":
        for lang in ("en", "de"):
            (out / f".corpus.{lang}").write_bytes(Path(f"{corpus[0]}.{lang}").read_bytes())
        args = ["--train", str(out / ".corpus"), "--tokenizer", str(tokenizer_model)]
    elif layout == "tokenizer":
        args = ["--train", str(corpus[0]), "--tokenizer", str(out / "tokenizer.model")]
    else:  # the same file under another name: writing the array would empty the corpus
        (out / "train.src.ids").unlink()
        os.link(f"{corpus[0]}.en", out / "train.src.ids")
    inputs = {p: p.read_bytes() for p in [*Path(corpus[0]).parent.iterdir(), tokenizer_model]
              if p.is_file()}
    before = snapshot(out)
    result = CliRunner().invoke(app, ["prepare", *args, "--workers", "1", "--output", str(out)])
    assert result.exit_code == 2, result.output
    assert "replaces" in result.stderr and "--output" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before
    assert all(path.read_bytes() == data for path, data in inputs.items())


@pytest.mark.parametrize("name", ["notes.txt", ".DS_Store", "train.src.ids/"])
def test_prepare_refuses_a_directory_holding_other_files(corpus, tmp_path, name):
    """The directory is replaced whole: a file of the user's in it, even a hidden one, or a
    folder under a name prepare writes, would go with it."""
    (tmp_path / "data").mkdir()
    mine = tmp_path / "data" / name.rstrip("/")
    if name.endswith("/"):
        mine.mkdir()
        mine = mine / "notes.txt"
    mine.write_text("mine")
    with pytest.raises(UserError, match=re.escape(name.rstrip("/"))):
        prepare(data_config(corpus), tmp_path / "data", workers=1)
    assert mine.read_text() == "mine"


def test_preparing_again_without_validation_removes_the_old_validation_files(
        corpus, tokenizer_model, prepared_dir, tmp_path):
    copy = copy_of(prepared_dir, tmp_path)
    prepare(replace(data_config(corpus, tokenizer_model), valid=None), copy, workers=1)
    assert open_prepared(copy).valid is None
    assert not list(copy.glob("valid.*"))


def test_workers_must_be_positive(corpus, tmp_path):
    with pytest.raises(UserError, match="--workers: 0"):
        prepare(data_config(corpus), tmp_path / "data", workers=0)


# ---------------------------------------------------------------------------------------------
# The command line

def test_cli_prepare_then_train_from_it(corpus, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "--train", str(corpus[0]), "--valid", str(corpus[1]),
                                 "--vocab-size", "300", "--workers", "1",
                                 "--output", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "400 pairs kept of 403" in result.stderr
    config = tmp_path / "toy.toml"
    config.write_text('[model]\nd_model = 32\nn_heads = 2\nd_ff = 64\nn_encoder_layers = 1\n'
                      'n_decoder_layers = 1\n[train]\nbatch_tokens = 600\nthreads = 1\n')
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "data"), "--config", str(config),
                                 "--max-steps", "2", "--output", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert sha256(tmp_path / "run" / "tokenizer.model") == sha256(tmp_path / "data" / "tokenizer.model")


@pytest.mark.parametrize("flag", [["--train", "x"], ["--vocab-size", "500"], ["--max-length", "9"]])
def test_cli_train_data_refuses_the_flags_prepare_took(tmp_path, flag):
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--output",
                                      str(tmp_path / "run"), *flag])
    assert result.exit_code == 2
    assert flag[0] in result.stderr and "prepare" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_train_data_names_a_directory_that_is_not_prepared(tmp_path):
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--output",
                                      str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "not a prepared corpus" in result.stderr and "Traceback" not in result.output
