"""Precision chosen by measurement: the decision, its cache, and what the library leaves alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tinytrans.config import ModelConfig, parameter_count
from tinytrans.errors import UserError
from tinytrans.hardware import (BF16_MIN_SPEEDUP, CACHE_ENV, PROBE_FLOP, PROBE_SEQUENCE,
                                PrecisionChoice, cache_dir, pick_precision, probe_rows,
                                time_bf16_speedup)

CPU = torch.device("cpu")
MODEL = ModelConfig(src_vocab_size=1000, tgt_vocab_size=1000, d_model=64, n_heads=2, d_ff=128)


class FakeProbe:
    """A probe that answers `speedup` and counts its calls."""

    def __init__(self, speedup: float):
        self.speedup, self.calls = speedup, []

    def __call__(self, model, rows: int, backward: bool) -> float:
        self.calls.append((model, rows, backward))
        return self.speedup


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "precision.json"


# ---------------------------------------------------------------------------------------------
# The decision

@pytest.mark.parametrize("speedup, expected", [(0.5, "fp32"), (1.1, "fp32"),
                                               (BF16_MIN_SPEEDUP, "bf16"), (3.0, "bf16")])
def test_auto_picks_bf16_only_where_it_is_measured_clearly_faster(cache, speedup, expected):
    probe = FakeProbe(speedup)
    choice = pick_precision("auto", CPU, MODEL, probe=probe)
    assert choice.precision == expected
    assert choice.reason == f"bf16 measured {speedup:.2g}x fp32 on this CPU"
    assert len(probe.calls) == 1


def test_the_choice_reads_as_the_start_of_training_prints_it(cache):
    choice = pick_precision("auto", CPU, MODEL, probe=FakeProbe(0.6))
    assert str(choice) == "fp32 (bf16 measured 0.6x fp32 on this CPU)"


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_an_explicit_precision_skips_the_probe(cache, name):
    probe = FakeProbe(10.0)
    assert pick_precision(name, CPU, MODEL, probe=probe) == PrecisionChoice(name, "as asked")
    assert probe.calls == [] and not cache.exists()


def test_training_probes_forward_and_backward_translation_forward_only(cache):
    probe = FakeProbe(1.0)
    pick_precision("auto", CPU, MODEL, probe=probe)
    pick_precision("auto", CPU, MODEL, inference=True, probe=probe)
    assert [backward for _, _, backward in probe.calls] == [True, False]


def test_the_probe_batch_shrinks_with_the_model_so_it_stays_short():
    assert probe_rows(MODEL, rows=64) == 64
    small = ModelConfig(src_vocab_size=8000, tgt_vocab_size=8000, d_model=128, n_heads=4, d_ff=512,
                        n_encoder_layers=4, n_decoder_layers=4)
    assert probe_rows(small, rows=3000) == int(PROBE_FLOP / (6 * parameter_count(small))) < 3000
    big = ModelConfig(src_vocab_size=32000, tgt_vocab_size=32000, d_model=512, n_heads=8, d_ff=2048,
                      n_encoder_layers=6, n_decoder_layers=6)
    assert probe_rows(big, rows=25000) == PROBE_SEQUENCE  # one sentence at least


def test_the_real_probe_measures_a_ratio_and_leaves_the_random_numbers_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    speedup = time_bf16_speedup(MODEL, rows=64, backward=True)
    assert 0.01 < speedup < 100
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------------------------
# The cache

def test_a_verdict_is_measured_once_then_read_from_the_cache(cache):
    probe = FakeProbe(0.5)
    first = pick_precision("auto", CPU, MODEL, probe=probe)
    again = pick_precision("auto", CPU, MODEL, probe=FakeProbe(9.0))  # a miss would say bf16
    assert first == again and len(probe.calls) == 1
    (key, value), = json.loads(cache.read_text()).items()
    assert value == 0.5 and f"torch {torch.__version__}" in key and "train" in key


def test_another_model_shape_is_a_cache_miss(cache):
    probe = FakeProbe(0.5)
    pick_precision("auto", CPU, MODEL, probe=probe)
    other = ModelConfig(src_vocab_size=2000, tgt_vocab_size=2000, d_model=64, n_heads=2, d_ff=128)
    pick_precision("auto", CPU, other, probe=probe)
    assert len(probe.calls) == 2 and len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"a": "fast"}', b"\xff\xfe",
                                     b'{"x": -1}', b'{"x": NaN}', b'{"x": 1' + b"0" * 400 + b"}"])
def test_a_corrupt_cache_is_ignored_and_replaced(cache, content):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    probe = FakeProbe(2.0)
    assert pick_precision("auto", CPU, MODEL, probe=probe).precision == "bf16"
    assert len(probe.calls) == 1
    assert 2.0 in json.loads(cache.read_text()).values()


def test_a_read_only_cache_is_no_error(cache, monkeypatch):
    def read_only(path, text):  # what atomic writes raise on a read-only filesystem
        raise UserError(f"{path}: cannot be written (Read-only file system)")
    monkeypatch.setattr("tinytrans.hardware.atomic_write_text", read_only)
    probe = FakeProbe(0.5)
    assert pick_precision("auto", CPU, MODEL, probe=probe).precision == "fp32"
    assert pick_precision("auto", CPU, MODEL, probe=probe).precision == "fp32"
    assert len(probe.calls) == 2 and not cache.exists()  # nothing kept: measured each time


def test_a_cache_that_cannot_be_a_directory_is_no_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))  # its parent is a file
    assert pick_precision("auto", CPU, MODEL, probe=FakeProbe(0.5)).precision == "fp32"


def test_the_cache_directory_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "tinytrans"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_an_unknown_precision_is_refused():
    with pytest.raises(UserError, match="--precision: 'fp8'"):
        pick_precision("fp8", CPU, MODEL)
