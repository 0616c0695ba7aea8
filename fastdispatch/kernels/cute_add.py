"""Benchmark kernel in CuTe DSL: ``out = a + b`` over fp32 vectors of any length.

The "CuTe DSL's own call vs fastdispatch" benchmark (3 tensors, DESIGN §1) runs this kernel
three ways on one binary: the raw TVM-FFI function, the DSL's kwargs-wrapped compiled object
and the :class:`~fastdispatch.backends.cute.CuteKernel` wrapper. The GPU work is negligible at
4096 elements, so the time per call is the call path's cost. Deliberately simple: one element
per thread, predicated on the length, so every length and every alignment is correct.
"""
from __future__ import annotations

import cutlass
import cutlass.cute as cute
import cuda.bindings.driver as cuda

__all__ = ["THREADS", "cute_add", "cute_add_kernel", "compile_tvm_ffi_add"]

#: Threads per CTA; each thread adds one element.
THREADS = 256


@cute.kernel
def _cute_add_kernel(a: cute.Tensor, b: cute.Tensor, out: cute.Tensor):
    tidx, _, _ = cute.arch.thread_idx()
    bidx, _, _ = cute.arch.block_idx()
    i = bidx * THREADS + tidx
    if i < cute.size(out):   # the last CTA is partial for lengths not a multiple of THREADS
        out[i] = a[i] + b[i]


@cute.jit
def cute_add(a: cute.Tensor, b: cute.Tensor, out: cute.Tensor, stream: cuda.CUstream):
    """Host function: launch ``out = a + b`` (1-D, same length) on ``stream``."""
    n = cute.size(out)
    # At least one CTA: a zero-sized grid is a launch error, and an empty call must be a no-op.
    blocks = cutlass.max((n + (THREADS - 1)) // THREADS, 1)
    _cute_add_kernel(a, b, out).launch(grid=[blocks, 1, 1], block=[THREADS, 1, 1], stream=stream)


def _check(a, b, out):
    """Shape/dtype rules of cute_add (run on every miss, i.e. every new shape)."""
    import torch

    for name, t in (("a", a), ("b", b), ("out", out)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"cute_add(): argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.float32:
            raise ValueError(f"cute_add(): argument '{name}' must be float32, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"cute_add(): argument '{name}' must be 1-D, got shape {tuple(t.shape)}")
    if not (a.shape == b.shape == out.shape):
        raise ValueError(f"cute_add(): a, b and out must have one length, got {a.shape[0]}, "
                         f"{b.shape[0]} and {out.shape[0]}")


_kernel = None


def cute_add_kernel():
    """The process-wide :class:`~fastdispatch.backends.cute.CuteKernel` of :func:`cute_add`:
    ``k(a, b, out)`` with fp32 1-D CUDA tensors of one length (any length, any alignment)."""
    global _kernel
    if _kernel is None:
        from fastdispatch.backends.cute import cute_kernel

        _kernel = cute_kernel(cute_add, validate=_check, name="cute_add")
    return _kernel


def compile_tvm_ffi_add(*, arch: str | None = None, aligned: bool = True):
    """CuTe DSL's own compiled object for :func:`cute_add` (``cute.compile`` with
    ``--enable-tvm-ffi``, env stream), for the 16-byte-aligned (or not) fp32 1-D class, any
    length. ``arch`` defaults to the current GPU's. Call it as ``f(a, b, out)`` (the kwargs
    wrapper) or ``f.__tvm_ffi_object__()(a, b, out)`` (the raw positional function). It is
    a fresh compile of the binary ``cute_add_kernel()`` uses for that class; the returned
    object's ``fastdispatch_binary`` attribute is that binary (see ``bench/bench_cute_call.py``).
    """
    import torch

    from fastdispatch.backends.cute import device_arch

    if arch is None:
        if not torch.cuda.is_available():
            raise RuntimeError("compile_tvm_ffi_add: no GPU here; pass arch= (e.g. 'sm_90a')")
        arch = device_arch(torch.cuda.current_device())
    base = torch.empty(64, dtype=torch.float32)  # a CPU stand-in: only dtype/rank/alignment count
    t = base[:16] if aligned else base[1:17]
    binary = cute_add_kernel().compile_for(t, t, t, arch=arch, keep_ptx=False, use_cache=False)
    compiled = binary.compiled
    compiled.fastdispatch_binary = binary
    return compiled
