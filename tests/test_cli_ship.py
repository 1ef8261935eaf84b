"""The commands that show and ship a model: `attention`, `average` and `export`, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers_cli import assert_one_line_error, invoke
from tinytrans.train import train
from toyrun import toy_config, write_corpus

SENTENCE = "The man buys a red car."


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ship")
    train(toy_config(write_corpus(root / "train", 300), None, max_steps=12, checkpoint_every=4,
                     keep_last=3), root / "run")
    return root / "run"


def test_attention_heatmap_shows_the_pieces(run_dir: Path) -> None:
    result = invoke("attention", "--model", run_dir, SENTENCE, "--beam", "2")
    assert result.exit_code == 0, result.output
    found = json.loads(invoke("attention", "--model", run_dir, SENTENCE, "--beam", "2", "--json").stdout)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cross attention")
    rows = [line for line in lines if "░" in line or "▒" in line or "▓" in line or "█" in line]
    assert len(rows) == len(found["target"]) + 1  # one row per target piece, then the legend


def test_attention_json_rows_sum_to_one(run_dir: Path) -> None:
    result = invoke("attention", "--model", run_dir, "--json", "--beam", "1", input=f"{SENTENCE}\n\nWhere is the dog?\n")
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objects) == 2  # the empty line is skipped
    for found in objects:
        for row in found["weights"]["cross"][0][0]:
            assert sum(row) == pytest.approx(1.0, abs=1e-4)


def test_attention_png(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "att.png"
    result = invoke("attention", "--model", run_dir, SENTENCE, "--png", png, "--head", "all")
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, cause", [
    (["--head", "all"], "--head"),
    (["--layer", "7"], "--layer"),
    (["--kind", "both"], "--kind"),
])
def test_attention_bad_options(run_dir: Path, args: list[str], cause: str) -> None:
    assert_one_line_error(invoke("attention", "--model", run_dir, SENTENCE, *args), 2, cause)


def test_attention_png_takes_one_sentence(run_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(invoke("attention", "--model", run_dir, "a", "b", "--png", tmp_path / "x.png"),
                          2, "--png")


def test_average_then_translate_with_it(run_dir: Path) -> None:
    result = invoke("average", "--model", run_dir, "--last", "3")
    assert result.exit_code == 0, result.output
    assert (run_dir / "checkpoints" / "average.safetensors").is_file()
    out = invoke("translate", "--model", run_dir, "--checkpoint", "average", "--beam", "1",
                 input=f"{SENTENCE}\n")
    assert out.exit_code == 0, out.output
    assert len(out.stdout.splitlines()) == 1


@pytest.mark.parametrize("last, cause", [("0", "at least 1"), ("9", "holds 3")])
def test_average_refuses_impossible_counts(run_dir: Path, last: str, cause: str) -> None:
    assert_one_line_error(invoke("average", "--model", run_dir, "--last", last), 2, cause)


def test_export_writes_a_ctranslate2_directory_once(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ctranslate2")
    out = tmp_path / "ct2"
    result = invoke("export", "--model", run_dir, "--output", out, "--quantization", "int8")
    assert result.exit_code == 0, result.output
    assert (out / "model.bin").is_file()
    assert_one_line_error(invoke("export", "--model", run_dir, "--output", out), 2, str(out), "already exists")


def test_export_bad_quantization_is_a_choice_error(run_dir: Path, tmp_path: Path) -> None:
    result = invoke("export", "--model", run_dir, "--output", tmp_path / "x", "--quantization", "int4")
    assert_one_line_error(result, 2, "--quantization")
