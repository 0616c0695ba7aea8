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
BoundLaunch = impl.BoundLaunch
NO_DEFAULT = _keys_py.NO_DEFAULT
if impl is _keys_py:
    from fastdispatch.grid_program import Program as GridProgram
else:
    from fastdispatch._grid import GridProgram

_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (lambda device: 0)
_capsule = getattr(torch.Tensor, "__dlpack_c_exchange_api__", None)
for _module in {impl, _keys_py}:
    _module.configure(torch.Tensor, torch.nn.Parameter, _capsule, _raw_stream)
if impl is not _keys_py:
    from fastdispatch import _stats as _stats_module
    impl.set_stats_recorder(_stats_module.record)
    impl.set_release_gil(knobs.release_gil)


def set_release_gil(release: bool) -> None:
    """Whether direct launches release the GIL around ``cuLaunchKernelEx`` (``knobs.release_gil``)."""
    knobs.release_gil = bool(release)
    if impl is not _keys_py:
        impl.set_release_gil(bool(release))

MODE_NULL, MODE_DRIVER, MODE_CALL, MODE_SLOW = (
    _keys_py.MODE_NULL, _keys_py.MODE_DRIVER, _keys_py.MODE_CALL, _keys_py.MODE_SLOW)
# Roles: what of an argument the key holds, per parameter, chosen by each backend for what its
# binaries depend on (no finer: a finer key only multiplies entries and misses):
#   CLASS      tensors: dtype, rank, device, 16-byte alignment; ints: Triton's class (==1, %16,
#              i32/i64/u64); floats/bools: their type. Triton's own specialization.
#   CONSTEXPR  the exact value (constexprs, launch options).
#   EXACT      tensors: + exact shape and strides (kernels configured per shape: scaled_mm).
#   LAYOUT     tensors: + compact-row-major and >= 2**31 bits (CuTe's size-generic binaries).
#   VALUE      as EXACT, and scalars by exact value (autotune keys, heuristics inputs).
ROLE_CLASS, ROLE_CONSTEXPR, ROLE_EXACT, ROLE_LAYOUT, ROLE_VALUE = (
    _keys_py.ROLE_CLASS, _keys_py.ROLE_CONSTEXPR, _keys_py.ROLE_EXACT, _keys_py.ROLE_LAYOUT,
    _keys_py.ROLE_VALUE)
ROLE_RUNTIME = ROLE_CLASS


def exchange_api_status():
    """(active, reason) for the live implementation."""
    return impl.exchange_api_status()
