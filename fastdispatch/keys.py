"""Selects the live key builder: the Cython extension ``_keys`` or its pure-Python twin.

Lifetime: per process (import time). ``FASTDISPATCH_NO_EXTENSIONS=1`` forces the twin; a missing
or broken extension falls back to it with the reason recorded. Both are configured here, once,
with torch's objects (the Cython path hands arguments it cannot read in C to the twin).
"""
from __future__ import annotations

import torch

from fastdispatch import _keys_py
from fastdispatch.knobs import knobs


def _select():
    if knobs.no_extensions:
        return _keys_py, "FASTDISPATCH_NO_EXTENSIONS=1"
    try:
        from fastdispatch import _keys
    except ImportError as exc:
        return _keys_py, f"extension not built ({exc})"
    return _keys, "compiled extension"


impl, reason = _select()
IMPLEMENTATION: str = impl.IMPLEMENTATION
FastKernel = impl.FastKernel
Entry = impl.Entry

_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (lambda device: 0)
_capsule = getattr(torch.Tensor, "__dlpack_c_exchange_api__", None)
for _module in {impl, _keys_py}:
    _module.configure(torch.Tensor, torch.nn.Parameter, _capsule, _raw_stream)

MODE_NULL, MODE_DRIVER, MODE_CALL, MODE_SLOW = (
    _keys_py.MODE_NULL, _keys_py.MODE_DRIVER, _keys_py.MODE_CALL, _keys_py.MODE_SLOW)
ROLE_RUNTIME, ROLE_CONSTEXPR = _keys_py.ROLE_RUNTIME, _keys_py.ROLE_CONSTEXPR


def exchange_api_status():
    """(active, reason) for the live implementation."""
    return impl.exchange_api_status()
