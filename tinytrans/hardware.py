"""Choosing the device, the number precision and the thread count."""

from __future__ import annotations

import ctypes
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from tinytrans.config import DEVICES, INFERENCE_PRECISIONS, PRECISIONS
from tinytrans.errors import UserError


def pick_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise UserError(f"--device: '{name}' is not one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available to this PyTorch")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 BF16 units; elsewhere PyTorch emulates bf16 matrix
    products and they run many times slower than fp32 (measured: bench/RESULTS.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_precision(name: str, device: torch.device, inference: bool = False) -> str:
    """'auto' means bf16 where the hardware computes it natively, else fp32."""
    allowed = INFERENCE_PRECISIONS if inference else PRECISIONS
    if name not in allowed:
        raise UserError(f"--precision: '{name}' is not one of {', '.join(allowed)}")
    if name == "int8" and device.type != "cpu":
        raise UserError("--precision int8: dynamic int8 quantisation runs on the CPU only (--device cpu)")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Matrix products in bf16, sensitive reductions (softmax, norms, loss) kept in fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


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
