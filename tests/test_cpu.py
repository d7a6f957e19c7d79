"""A training process keeps the memory it frees, so the next step's activations do not fault in fresh pages."""

import platform
import subprocess
import sys

import pytest

STEPS = """
import resource, sys, torch
from ponder.train.cpu import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step(i):  # a step's activations, kept for the backward pass, then freed; batches differ in length
    kept = [torch.ones(4 * 2**20 + i * 2**14) for _ in range(4)]
    del kept
step(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(1, 31):
    step(i)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_STEP = 4 * 4 * 2**20 * 4 // 4096


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the C library is not glibc")
def test_freed_activations_are_reused_instead_of_faulted_in_again():
    kept, plain = page_faults("keep"), page_faults("plain")
    assert kept < 3 * PAGES_PER_STEP  # 30 steps fault in only what the growing sizes add
    assert plain > 20 * PAGES_PER_STEP  # glibc's default hands every block back and faults it in again
