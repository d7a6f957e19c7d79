"""Whether bf16 autocast pays on this machine.

bf16 halves the cost of a matmul only where the hardware computes in bf16. A CPU without native bf16
(AVX2 only, no AVX512-BF16 or AMX) emulates it: a 2048x512 by 512x1600 matmul takes 2.1 s in bf16 against
63 ms in float32 on such a machine (BENCHMARKS.md), so `bf16: true` there trains in float32 and says so.
"""

from __future__ import annotations

import functools
import warnings

import torch


@functools.cache
def native_bf16(device_type: str) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return True if probe is None else bool(probe())  # no probe: trust the config, as before
    return True


def use_bf16(requested: bool, device_type: str = "cpu") -> bool:
    """bf16 autocast when the config asks for it and the device computes bf16 natively."""
    if not requested:
        return False
    if native_bf16(device_type):
        return True
    _warn_float32(device_type)
    return False


@functools.cache
def _warn_float32(device_type: str) -> None:
    warnings.warn(f"bf16: this {device_type} has no native bf16 (it would be emulated, many times slower); "
                  "training in float32", stacklevel=3)
