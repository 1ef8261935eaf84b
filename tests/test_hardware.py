"""Precision chosen by measurement: the decision, its cache, and what the library leaves alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tinytrans.errors import UserError
from tinytrans.hardware import (BF16_MIN_SPEEDUP, CACHE_ENV, PrecisionChoice, cache_dir,
                                cpu_identity, pick_precision, time_both_ways)

CPU = torch.device("cpu")
WORK = "d_model 64, 1000 tokens per batch"


class FakeProbe:
    """A probe that answers `speedup` and counts its calls."""

    def __init__(self, speedup: float):
        self.speedup, self.calls = speedup, 0

    def __call__(self) -> float:
        self.calls += 1
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
    choice = pick_precision("auto", CPU, probe, WORK)
    assert choice.precision == expected and choice.speedup == speedup
    assert choice.reason == \
        f"bf16 measured {speedup:.2g}x fp32 in real training updates on this CPU"
    assert probe.calls == 1


def test_the_choice_reads_as_the_start_of_training_prints_it(cache):
    choice = pick_precision("auto", CPU, FakeProbe(0.6), WORK)
    assert str(choice) == "fp32 (bf16 measured 0.6x fp32 in real training updates on this CPU)"
    choice = pick_precision("auto", CPU, FakeProbe(0.6), WORK, inference=True)
    assert str(choice) == "fp32 (bf16 measured 0.6x fp32 in real decoding on this CPU)"


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_an_explicit_precision_skips_the_probe(cache, name):
    probe = FakeProbe(10.0)
    assert pick_precision(name, CPU, probe, WORK) == PrecisionChoice(name, "as asked")
    assert probe.calls == 0 and not cache.exists()


def test_without_a_probe_auto_keeps_fp32(cache):
    assert pick_precision("auto", CPU).precision == "fp32"


def test_training_and_translation_are_measured_apart(cache):
    probe = FakeProbe(1.0)
    pick_precision("auto", CPU, probe, WORK)
    pick_precision("auto", CPU, probe, WORK, inference=True)
    assert probe.calls == 2
    keys = sorted(json.loads(cache.read_text()))
    assert [k.split(" | ")[-2] for k in keys] == ["inference", "train"]


# ---------------------------------------------------------------------------------------------
# Timing both ways: a fake clock that each step advances by its own cost


class FakeWork:
    """step(precision, piece): costs `seconds[precision]` per unit of work (`size[piece]`
    units) on a fake clock, and records the calls in order."""

    def __init__(self, monkeypatch, seconds: dict[str, float], sizes=(10, 20, 30, 40, 50, 60),
                 outlier: tuple[str, int, float] | None = None):
        self.now, self.calls = 0.0, []
        self.seconds, self.sizes, self.outlier = seconds, sizes, outlier
        monkeypatch.setattr("tinytrans.hardware.time.perf_counter", lambda: self.now)

    def __call__(self, precision: str, piece: int) -> int:
        self.calls.append((precision, piece))
        size = self.sizes[piece]
        self.now += self.seconds[precision] * size
        if self.outlier and self.outlier[:2] == (precision, piece):
            self.now += self.outlier[2]  # the machine was busy just then
        return size


def test_both_ways_measures_the_ratio_of_speeds_per_unit_of_work(monkeypatch):
    work = FakeWork(monkeypatch, {"fp32": 0.02, "bf16": 0.01})
    assert time_both_ways(work, pieces=6) == pytest.approx(2.0)
    # piece 0 warms both up; then each piece both ways, alternating which goes first
    assert work.calls == [("fp32", 0), ("bf16", 0), ("fp32", 1), ("bf16", 1), ("bf16", 2),
                          ("fp32", 2), ("fp32", 3), ("bf16", 3), ("bf16", 4), ("fp32", 4),
                          ("fp32", 5), ("bf16", 5)]


def test_both_ways_is_not_swayed_by_one_busy_moment(monkeypatch):
    work = FakeWork(monkeypatch, {"fp32": 0.01, "bf16": 0.02}, outlier=("fp32", 3, 100.0))
    assert time_both_ways(work, pieces=6) == pytest.approx(0.5)  # the median of five ratios


def test_emulated_bf16_is_not_timed_at_length(monkeypatch):
    work = FakeWork(monkeypatch, {"fp32": 0.01, "bf16": 0.2})
    assert time_both_ways(work, pieces=6) == pytest.approx(0.05)
    assert work.calls == [("fp32", 0), ("bf16", 0)]


def test_both_ways_stops_at_its_budget_with_two_pieces_measured(monkeypatch):
    work = FakeWork(monkeypatch, {"fp32": 1.0, "bf16": 1.0})
    time_both_ways(work, pieces=6, budget_seconds=5)
    assert max(piece for _, piece in work.calls) == 2


# ---------------------------------------------------------------------------------------------
# The CPU, as the cache names it

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu avx2 avx512f avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
"""


def test_the_cpu_is_named_by_vendor_family_model_stepping_and_flags():
    assert cpu_identity(ZEN4).startswith("AuthenticAMD 25/17/1 flags ")
    assert "(avx2 avx512f avx512_bf16) AMD EPYC" in cpu_identity(ZEN4)
    zen5 = ZEN4.replace("cpu family\t: 25", "cpu family\t: 26")
    more_flags = ZEN4.replace("avx512_bf16", "avx512_bf16 amx_tile")
    fewer_flags = ZEN4.replace(" avx512f", "")
    names = {cpu_identity(text) for text in (ZEN4, zen5, more_flags, fewer_flags)}
    assert len(names) == 4  # the same model name, four CPUs
    assert cpu_identity("") != ""  # no /proc/cpuinfo: the platform's words
    graviton = "processor\t: 0\nFeatures\t: fp asimd sve bf16\nCPU implementer\t: 0x41\n" \
               "CPU variant\t: 0x1\nCPU part\t: 0xd40\nCPU revision\t: 1\n"
    assert cpu_identity(graviton).startswith("0x41 0xd40/0x1/1 flags ")
    assert "(bf16 sve)" in cpu_identity(graviton)
    assert cpu_identity(graviton.replace("0xd40", "0xd0c").replace(" sve bf16", "")) \
        != cpu_identity(graviton)


def test_another_cpu_with_the_same_name_is_a_cache_miss(cache, monkeypatch):
    probe = FakeProbe(1.5)
    monkeypatch.setattr("tinytrans.hardware.cpu_identity", lambda: cpu_identity(ZEN4))
    pick_precision("auto", CPU, probe, WORK)
    monkeypatch.setattr("tinytrans.hardware.cpu_identity",
                        lambda: cpu_identity(ZEN4.replace("family\t: 25", "family\t: 26")))
    pick_precision("auto", CPU, probe, WORK)
    assert probe.calls == 2


# ---------------------------------------------------------------------------------------------
# The cache

def test_a_verdict_is_measured_once_then_read_from_the_cache(cache):
    probe = FakeProbe(0.5)
    first = pick_precision("auto", CPU, probe, WORK)
    again = pick_precision("auto", CPU, FakeProbe(9.0), WORK)  # a miss would say bf16
    assert first == again and probe.calls == 1
    (key, value), = json.loads(cache.read_text()).items()
    assert value == 0.5 and f"torch {torch.__version__}" in key and "train" in key
    assert key.startswith(cpu_identity()) and key.endswith(WORK)


def test_other_work_is_a_cache_miss(cache):
    probe = FakeProbe(0.5)
    pick_precision("auto", CPU, probe, WORK)
    pick_precision("auto", CPU, probe, WORK.replace("64", "128"))
    assert probe.calls == 2 and len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"a": "fast"}', b"\xff\xfe",
                                     b'{"x": -1}', b'{"x": NaN}', b'{"x": 1' + b"0" * 400 + b"}"])
def test_a_corrupt_cache_is_ignored_and_replaced(cache, content):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    probe = FakeProbe(2.0)
    assert pick_precision("auto", CPU, probe, WORK).precision == "bf16"
    assert probe.calls == 1
    assert 2.0 in json.loads(cache.read_text()).values()


def test_a_read_only_cache_is_no_error(cache, monkeypatch):
    def read_only(path, text):  # what atomic writes raise on a read-only filesystem
        raise UserError(f"{path}: cannot be written (Read-only file system)")
    monkeypatch.setattr("tinytrans.hardware.atomic_write_text", read_only)
    probe = FakeProbe(0.5)
    assert pick_precision("auto", CPU, probe, WORK).precision == "fp32"
    assert pick_precision("auto", CPU, probe, WORK).precision == "fp32"
    assert probe.calls == 2 and not cache.exists()  # nothing kept: measured each time


def test_a_cache_that_cannot_be_a_directory_is_no_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))  # its parent is a file
    assert pick_precision("auto", CPU, FakeProbe(0.5), WORK).precision == "fp32"


def test_the_cache_directory_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "tinytrans"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_an_unknown_precision_is_refused():
    with pytest.raises(UserError, match="--precision: 'fp8'"):
        pick_precision("fp8", CPU)


# ---------------------------------------------------------------------------------------------
# What the library leaves alone

PROCESS_STATE = """
import os, torch
def state():
    return (torch.random.get_rng_state().tolist(), torch.get_float32_matmul_precision(),
            torch.get_num_threads(), dict(os.environ))
before = state()
import pkgutil, importlib, tinytrans
for module in pkgutil.iter_modules(tinytrans.__path__):
    if module.name != "__main__":
        importlib.import_module("tinytrans." + module.name)
from typer.testing import CliRunner
from tinytrans.cli import app
result = CliRunner().invoke(app, ["--debug", "tokenizer", "encode", "--model", "/nonexistent"])
assert result.exit_code != 0
print(state() == before)
"""


def test_importing_tinytrans_changes_nothing_process_wide():
    """Every module imported and a --debug command run: torch's random numbers, its matmul
    precision, its threads and the environment are as they were."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", PROCESS_STATE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_training_on_a_gpu_restores_the_matmul_precision(monkeypatch):
    from tinytrans.train import _fp32_matmuls
    torch.set_float32_matmul_precision("highest")
    with _fp32_matmuls(torch.device("cuda")):
        assert torch.get_float32_matmul_precision() == "high"  # TF32 while training
    assert torch.get_float32_matmul_precision() == "highest"
    with _fp32_matmuls(torch.device("cpu")):
        assert torch.get_float32_matmul_precision() == "highest"
