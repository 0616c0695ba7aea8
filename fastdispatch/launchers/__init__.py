"""Launchers: how an entry reaches the GPU (per call).

``_driver`` (Cython) launches Triton binaries with ``cuLaunchKernelEx`` from a plan computed
once per entry; CuTe DSL kernels are called through their TVM-FFI function; Triton's own
``CompiledKernel.run`` is the slow launch (hooks, scratch memory, anything a plan cannot say).
libcuda is opened at run time, so importing this package needs no GPU.
"""
from __future__ import annotations


def _driver_status() -> tuple[bool, str]:
    """(available, why) for the direct driver launcher."""
    try:
        from fastdispatch.launchers import _driver
    except ImportError as exc:
        return False, f"extension not built ({exc})"
    if _driver.available():
        return True, "libcuda.so.1 loaded"
    return False, _driver.load_error()
