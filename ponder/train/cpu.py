"""What a training process sets once on the CPU: its thread count, and an allocator that keeps what it frees.

glibc's malloc returns a large freed block to the kernel (blocks over its mmap threshold are unmapped, and
the heap's top is trimmed), so a training step that frees its activations and allocates them again next
step pays a page fault for every page of every one: a step of a 16-layer model spent a fifth of its CPU
time in the kernel and took 1.3x as long (BENCHMARKS.md, bench/cpu_alloc.py). Raising the mmap threshold
to glibc's ceiling and never trimming keeps those pages in the process for the next step."""

from __future__ import annotations

import ctypes
import sys

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit; larger blocks are always mapped
NEVER_TRIM = 2**31 - 1


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


def setup_cpu(threads: int | None) -> None:
    """The thread count a config asks for (None leaves torch's own), and an allocator that keeps memory."""
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
