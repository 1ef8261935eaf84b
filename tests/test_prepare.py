"""Prepared corpora: the same pairs as encoding at the start of training, streamed, checked on
every load, and trained on exactly as the text they came from."""

from __future__ import annotations

import hashlib
import json
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
from tinytrans.train import load_validation_data, train
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
    expected = load_validation_data(cfg, tok, tok, lambda event: None)
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
    (manifest_edit(lambda m: m["splits"]["train"].pop("files")), "malformed manifest"),
])
def test_a_damaged_directory_is_refused_in_one_line(prepared_dir, tmp_path, damage, message):
    copy = copy_of(prepared_dir, tmp_path)
    damage(copy)
    with pytest.raises(UserError, match=message) as error:
        open_prepared(copy)
    assert "\n" not in str(error.value)


def test_a_directory_whose_source_corpus_changed_is_stale(corpus, tmp_path):
    train_prefix = write_corpus(tmp_path / "src" / "train", 50)
    prepare(DataConfig(train=str(train_prefix), vocab_size=200), tmp_path / "data", workers=1)
    open_prepared(tmp_path / "data")  # fine as it is
    with open(f"{train_prefix}.de", "a", encoding="utf-8") as handle:
        handle.write("Eine Zeile mehr.\n")
    with pytest.raises(UserError, match=r"stale: .*train\.de had"):
        open_prepared(tmp_path / "data")


def test_an_interrupted_prepare_leaves_no_usable_directory(corpus, tokenizer_model, prepared_dir,
                                                           tmp_path):
    """Preparing again over a good directory, from a corpus that fails half-way (invalid UTF-8):
    the old manifest is gone, so the mixture is refused rather than trained on."""
    copy = copy_of(prepared_dir, tmp_path)
    broken = tmp_path / "broken"
    lines = Path(f"{corpus[0]}.en").read_bytes().splitlines(keepends=True)
    (tmp_path / "broken.en").write_bytes(b"".join(lines[:300]) + b"\xff\xfe\n" + b"".join(lines[301:]))
    (tmp_path / "broken.de").write_bytes(Path(f"{corpus[0]}.de").read_bytes())
    with pytest.raises(UserError, match="invalid UTF-8"):
        prepare(replace(data_config(corpus, tokenizer_model), train=str(broken)), copy, workers=1)
    with pytest.raises(UserError, match="not a prepared corpus"):
        open_prepared(copy)
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_prepare_refuses_a_directory_holding_other_files(corpus, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        prepare(data_config(corpus), tmp_path / "data", workers=1)
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"


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
