"""Argument checks shared by backends (slow path only): clear errors that name the argument.

Lifetime: per miss. Nothing is cached or changed before these checks pass.
"""
from __future__ import annotations

import torch

# dtypes a GPU kernel pointer argument may have (Triton's and CuTe's element types).
SUPPORTED_DTYPES = frozenset(getattr(torch, n) for n in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2",
    "float8_e4m3fnuz", "float8_e5m2fnuz") if hasattr(torch, n))


def check_cuda_tensors(kernel: str, named_args, *, allow_cpu: bool = False) -> None:
    """Every tensor in ``named_args`` ((name, value) pairs) is a CUDA tensor with a supported
    dtype, all on one device, and there is at least one. Raises ValueError naming the argument."""
    first = None
    for name, value in named_args:
        if not isinstance(value, torch.Tensor):
            continue
        if value.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{kernel}(): argument '{name}' has dtype {value.dtype}, which GPU "
                             f"kernels do not take; expected one of "
                             f"{', '.join(sorted(str(d).replace('torch.', '') for d in SUPPORTED_DTYPES))}")
        if value.device.type != "cuda" and not allow_cpu:
            raise ValueError(f"{kernel}(): argument '{name}' is on {value.device}; this kernel "
                             f"launches on CUDA tensors (move it with .cuda())")
        if first is None:
            first = (name, value.device)
        elif value.device != first[1]:
            raise ValueError(f"{kernel}(): tensors on different devices: '{first[0]}' is on "
                             f"{first[1]} but '{name}' is on {value.device}")
    if first is None:
        raise ValueError(f"{kernel}(): needs at least one tensor argument (it picks the device "
                         f"and stream)")
