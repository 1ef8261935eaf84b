"""Choosing the device, the number precision and the thread count.

The precision `auto` picks on a CPU is measured, not guessed from /proc/cpuinfo: whether bf16
pays off depends on more than a flag (an AVX-512 BF16 Xeon without AMX runs bf16 products at
half the fp32 rate; an AMD EPYC with AVX-512 BF16 runs them 4.5x faster, yet trains a narrow
model no faster: bench/RESULTS.md), so a short probe times the model itself both ways, and the
verdict is cached per CPU model, torch version, thread count and model shape.
"""

from __future__ import annotations

import ctypes
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
from tinytrans.config import (DEVICES, INFERENCE_PRECISIONS, PRECISIONS, SIZE_KEYS, ModelConfig,
                              parameter_count)
from tinytrans.errors import UserError
from tinytrans.model import Transformer

BF16_MIN_SPEEDUP = 1.2  # bf16 must be clearly faster: its rounding is not free
CACHE_ENV = "TINYTRANS_CACHE_DIR"  # where the measured verdicts are kept (default: XDG cache)
PROBE_FLOP = 5e9  # the probe's fp32 work per pass: ~0.1 s (a second or two where bf16 is emulated)
PROBE_SEQUENCE = 32  # tokens per sentence of the probe's batch


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
    reason: str  # "bf16 measured 0.6x fp32 on this CPU"

    def __str__(self) -> str:
        return f"{self.precision} ({self.reason})"


Probe = Callable[[ModelConfig, int, bool], float]  # (model, tokens, backward) -> bf16 speed / fp32's


def pick_precision(name: str, device: torch.device, model: ModelConfig | None = None,
                   inference: bool = False, rows: int = 1024,
                   probe: Probe | None = None) -> PrecisionChoice:
    """The precision to train (or, with `inference`, to translate) in.

    An explicit name is taken as it is. `auto` means bf16 on a GPU that supports it; on a CPU,
    bf16 only where the probe measures the model itself (a batch of about `rows` target tokens;
    forward and backward when training) at least BF16_MIN_SPEEDUP times as fast as in fp32.
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
    model = model or ModelConfig(src_vocab_size=8000, tgt_vocab_size=8000)
    rows = probe_rows(model, rows)
    speedup = measured_bf16_speedup(model, rows, backward=not inference,
                                    probe=probe or time_bf16_speedup)
    verdict = f"bf16 measured {speedup:.2g}x fp32 on this CPU"
    return PrecisionChoice("bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32", verdict)


def probe_rows(model: ModelConfig, rows: int) -> int:
    """The probe's batch in target tokens: `rows`, cut so its fp32 work (about 6 x parameters
    per token, forward and backward) stays about PROBE_FLOP, a fraction of a second."""
    flop_per_token = 6 * parameter_count(model, vocab_size=8000)
    return max(PROBE_SEQUENCE, min(rows, int(PROBE_FLOP / flop_per_token)))


def time_bf16_speedup(model_cfg: ModelConfig, rows: int, backward: bool) -> float:
    """fp32 time / bf16-autocast time of the model itself on a random batch of about `rows`
    target tokens: forward (and backward with `backward`), each the best of a few repetitions
    after a warm-up. Timing the whole model, not its products alone, counts what bf16 also costs:
    casts, and the element-wise work that does not get faster (on an AVX-512 BF16 CPU the products
    alone measured 2.9x, the training step 0.95-1.11x; bench/RESULTS.md)."""
    with torch.random.fork_rng(devices=[]):  # the caller's random numbers stay as they were
        torch.manual_seed(0)
        return _time_bf16_speedup(model_cfg, rows, backward)


def _time_bf16_speedup(model_cfg: ModelConfig, rows: int, backward: bool) -> float:
    model = Transformer(model_cfg)
    batch, length = max(1, rows // PROBE_SEQUENCE), PROBE_SEQUENCE
    src = torch.randint(4, model_cfg.src_vocab_size or 8000, (batch, length))  # (B, S)
    tgt = torch.randint(4, model_cfg.tgt_vocab_size or 8000, (batch, length))  # (B, T)

    def run(precision: str) -> None:
        with torch.set_grad_enabled(backward), autocast(torch.device("cpu"), precision):
            logits = model(src, tgt)  # (B, T, V)
        if backward:
            torch.log_softmax(logits.float(), dim=-1).mean().backward()  # the loss is fp32 too

    def best_time(precision: str, repeats: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(precision)
            times.append(time.perf_counter() - start)
        return min(times)

    model.train(backward)
    run("fp32")  # warm-up: kernels picked, memory allocated
    fp32 = best_time("fp32", 2)
    first = best_time("bf16", 1)  # its own warm-up
    if first > 3 * fp32:
        return fp32 / first  # bf16 emulated: more repetitions would only cost seconds
    return fp32 / best_time("bf16", 2)


def measured_bf16_speedup(model: ModelConfig, rows: int, backward: bool, probe: Probe) -> float:
    """The probe's verdict for this CPU, torch version, thread count and model: from the cache
    when it has one, else measured now and cached. The cache never causes an error: a corrupt
    or unwritable one is ignored."""
    shape = ", ".join(f"{key} {getattr(model, key)}" for key in SIZE_KEYS + ("n_heads",))
    key = " | ".join([cpu_model(), f"torch {torch.__version__}", f"{torch.get_num_threads()} threads",
                      "train" if backward else "inference", f"{shape}, {rows} tokens"])
    path = cache_dir() / "precision.json"
    verdicts = _read_verdicts(path)
    if key in verdicts:
        return verdicts[key]
    speedup = probe(model, rows, backward)
    _write_verdicts(path, {**verdicts, key: speedup})
    return speedup


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (or the platform's word elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


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
