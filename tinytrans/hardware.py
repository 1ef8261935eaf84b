"""Choosing the device, the number precision and the thread count.

The precision `auto` picks on a CPU is measured, not guessed from /proc/cpuinfo: whether bf16
pays off depends on more than a flag (an AVX-512 BF16 Xeon without AMX runs bf16 products at
half the fp32 rate; an AMD EPYC with AVX-512 BF16 runs them 4.5x faster, yet trains a narrow
model no faster: bench/RESULTS.md). Nor does a probe of the model alone tell: on an AMD EPYC
family 25 the model's forward and backward measured bf16 at 1.26x while real training updates
(the loss, the optimizer, every weight's cast, dropout, the real batch shapes) ran at 0.7x. So
the caller hands in a probe that times the real work both ways (train.py: real updates on the
run's own batches; translate.py: real decoding), and the verdict is cached per CPU (vendor,
family, model, stepping and flags: two different CPUs here share the model name "AMD EPYC"),
torch version, thread count and work.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from tinytrans.atomic import atomic_write_text
from tinytrans.config import DEVICES, INFERENCE_PRECISIONS, PRECISIONS
from tinytrans.errors import UserError

BF16_MIN_SPEEDUP = 1.2  # bf16 must be clearly faster: its rounding is not free
CACHE_ENV = "TINYTRANS_CACHE_DIR"  # where the measured verdicts are kept (default: XDG cache)
# Flags that decide how fast bf16 and fp32 products run; they are named in the cache key (all
# flags are in it, as a hash), so a reader of precision.json sees why two CPUs differ.
NAMED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16", "sve")


def pick_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise UserError(f"--device: '{name}' is not one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available to this PyTorch")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# Precision

@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to compute in, and why, in words a user reads at the start of a run."""

    precision: str  # fp32, bf16 or int8
    reason: str  # "bf16 measured 0.6x fp32 in real training updates on this CPU"
    speedup: float | None = None  # bf16's measured speed / fp32's, where it was measured

    def __str__(self) -> str:
        return f"{self.precision} ({self.reason})"


Probe = Callable[[], float]  # the real work's speed in bf16 / its speed in fp32


def pick_precision(name: str, device: torch.device, probe: Probe | None = None, work: str = "",
                   inference: bool = False) -> PrecisionChoice:
    """The precision to train (or, with `inference`, to translate) in.

    An explicit name is taken as it is. `auto` means bf16 on a GPU that supports it; on a CPU,
    bf16 only where `probe` (timing the real work, which `work` names for the cache: the model's
    shape and batch) measures it at least BF16_MIN_SPEEDUP times as fast as fp32; without a
    probe, fp32.
    """
    allowed = INFERENCE_PRECISIONS if inference else PRECISIONS
    if name not in allowed:
        raise UserError(f"--precision: '{name}' is not one of {', '.join(allowed)}")
    if name == "int8" and device.type != "cpu":
        raise UserError("--precision int8: dynamic int8 quantisation runs on the CPU only (--device cpu)")
    if name != "auto":
        return PrecisionChoice(name, "as asked")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", "this GPU computes bf16 natively")
        return PrecisionChoice("fp32", "this GPU has no bf16")
    if probe is None:
        return PrecisionChoice("fp32", "nothing to measure bf16 on")
    speedup = measured_bf16_speedup(("inference | " if inference else "train | ") + work, probe)
    what = "decoding" if inference else "training updates"
    verdict = f"bf16 measured {speedup:.2g}x fp32 in real {what} on this CPU"
    return PrecisionChoice("bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32", verdict, speedup)


Step = Callable[[str, int], int]  # (precision, piece) -> units of work done (target tokens)


def time_both_ways(step: Step, pieces: int, budget_seconds: float = 20.0) -> float:
    """bf16's speed / fp32's on real work: `step(precision, i)` does piece i (a real update on
    batch i, a real decoding of batch i) and says how much work it was. Piece 0 warms both up
    (kernels picked, memory allocated); then each piece runs in both precisions, alternating
    which goes first, so a change in the machine's load falls on both; the verdict is the median
    of the per-piece ratios. Stops early where bf16 is emulated (its warm-up over 3x fp32's: more
    would only cost seconds) or when the budget is spent with two pieces measured."""
    fp32_seconds = _timed(step, "fp32", 0)[0]
    bf16_seconds = _timed(step, "bf16", 0)[0]
    if bf16_seconds > 3 * fp32_seconds:
        return fp32_seconds / bf16_seconds
    ratios: list[float] = []
    began = time.perf_counter()
    for piece in range(1, pieces):
        order = ("fp32", "bf16") if piece % 2 else ("bf16", "fp32")
        rate = {precision: _timed(step, precision, piece) for precision in order}
        ratios.append((rate["bf16"][1] / rate["bf16"][0]) / (rate["fp32"][1] / rate["fp32"][0]))
        if len(ratios) >= 2 and time.perf_counter() - began > budget_seconds:
            break
    if not ratios:
        return fp32_seconds / bf16_seconds
    ratios.sort()
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


def _timed(step: Step, precision: str, piece: int) -> tuple[float, int]:
    """(seconds, work) of one piece in one precision."""
    start = time.perf_counter()
    work = step(precision, piece)
    return max(time.perf_counter() - start, 1e-9), max(work, 1)


def measured_bf16_speedup(work: str, probe: Probe) -> float:
    """The probe's verdict for this CPU, torch version, thread count and work: from the cache
    when it has one, else measured now and cached. The cache never causes an error: a corrupt
    or unwritable one is ignored."""
    key = " | ".join([cpu_identity(), f"torch {torch.__version__}",
                      f"{torch.get_num_threads()} threads", work])
    path = cache_dir() / "precision.json"
    verdicts = _read_verdicts(path)
    if key in verdicts:
        return verdicts[key]
    speedup = probe()
    _write_verdicts(path, {**verdicts, key: speedup})
    return speedup


def cpu_identity(cpuinfo: str | None = None) -> str:
    """The CPU as vendor, family, model, stepping and flags (a hash of all of them, and the few
    that decide bf16's speed by name), then its model name: "GenuineIntel 6/143/8 flags
    3f2a9c01 (avx2 avx512f avx512_bf16 amx_bf16 amx_tile) Intel(R) Xeon(R) ...". The model name
    alone does not tell CPUs apart ("AMD EPYC" is two families here). Elsewhere than Linux, the
    platform's own words."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if not key.strip():
            break  # the first processor's block is enough: all cores are the same CPU
        fields.setdefault(key.strip(), value.strip())
    if not fields:
        return f"{platform.system()} {platform.machine()} {platform.processor()}".strip()
    arm = "CPU implementer" in fields  # aarch64 Linux names its fields otherwise
    flags = sorted(fields.get("Features" if arm else "flags", "").split())
    digest = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:8]
    named = " ".join(f for f in NAMED_FLAGS if f in flags) or "none named"
    keys = ("CPU part", "CPU variant", "CPU revision") if arm else \
        ("cpu family", "model", "stepping")
    number = "/".join(fields.get(k, "?") for k in keys)
    vendor = fields.get("CPU implementer" if arm else "vendor_id", "?")
    return f"{vendor} {number} flags {digest} ({named}) {fields.get('model name', '?')}"


def cache_dir() -> Path:
    """$TINYTRANS_CACHE_DIR, else $XDG_CACHE_HOME/tinytrans, else ~/.cache/tinytrans."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tinytrans"


def _read_verdicts(path: Path) -> dict[str, float]:
    """The cached verdicts; only well-formed entries (a positive finite speed-up) are kept."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {key: value for key, value in ((k, _speedup(v)) for k, v in loaded.items())
            if value is not None}


def _speedup(value: object) -> float | None:
    """A cached verdict as a float, or None if it is not a positive finite number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)  # a JSON integer of 400 digits overflows
    except OverflowError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _write_verdicts(path: Path, verdicts: dict[str, float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(verdicts, indent=1, sort_keys=True) + "\n")
    except (OSError, UserError):
        pass  # a read-only home or a full disk: measure again next time


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Matrix products in bf16, sensitive reductions (softmax, norms, loss) kept in fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# ---------------------------------------------------------------------------------------------
# Process-wide settings: the CLI's to make, since it owns the process (a program that imports
# tinytrans owns its own, and the library leaves them alone)

def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads: {threads} must be at least 1")
        torch.set_num_threads(threads)
def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system.

    A training step allocates and frees tensors of tens of MB (the logits alone are tokens x
    vocabulary floats). By default glibc serves each from a fresh mmap and unmaps it when freed,
    so the next step touches new pages and the kernel zero-fills every one of them again: on
    these 2-core machines that cost about 10% of a step (bench/RESULTS.md, "allocator"). Peak
    memory is unchanged; memory is simply not handed back between steps. Does nothing where
    glibc is not the C library.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    mallopt(m_mmap_max, 0)  # no mmap for large blocks: they come from (and return to) the heap
    mallopt(m_trim_threshold, 2**31 - 1)  # never shrink the heap while running (int max)
