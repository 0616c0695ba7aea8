"""Compiling a scaled_mm kernel object (per config, never per call), shared by sm90 and sm100.

One binary per (config, bias) for every M/N/K: the arguments are fake tensors with symbolic
sizes, TVM-FFI is on (torch tensors in, torch's current stream), and ``--gpu-arch`` makes the
compile independent of the local GPU. ``cute.compile`` is not thread-safe: every compile holds
the process-wide lock of the CuTe backend.
"""
from __future__ import annotations

import tempfile

import cutlass
import cutlass.cute as cute
from cutlass.cute.runtime import make_fake_compact_tensor, make_fake_stream

from fastdispatch.backends.cute import COMPILE_LOCK


def fake_args(has_bias: bool) -> list:
    """(a, bt, scale_a, scale_b, out[, bias], stream) with symbolic M, N, K. The divisibility
    is what TMA needs for 16-byte row strides (K fp8 elements, N bf16 elements)."""
    m = cute.sym_int32(symbol="M")
    n = cute.sym_int32(divisibility=8, symbol="N")
    k = cute.sym_int32(divisibility=16, symbol="K")
    row_major = dict(stride_order=(1, 0), assumed_align=16)
    args = [
        make_fake_compact_tensor(cutlass.Float8E4M3FN, (m, k), **row_major),  # a
        make_fake_compact_tensor(cutlass.Float8E4M3FN, (n, k), **row_major),  # bt
        make_fake_compact_tensor(cutlass.Float32, (m,), assumed_align=16),  # scale_a
        make_fake_compact_tensor(cutlass.Float32, (n,), assumed_align=16),  # scale_b
        make_fake_compact_tensor(cutlass.BFloat16, (m, n), **row_major),  # out
    ]
    if has_bias:
        args.append(make_fake_compact_tensor(cutlass.BFloat16, (n,), assumed_align=16))
    args.append(make_fake_stream(use_tvm_ffi_env_stream=True))
    return args


def compile_kernel(kernel, arch: str, has_bias: bool, out_dtype: str, *, keep_ptx: bool):
    """``cute.compile`` of ``kernel.run`` / ``kernel.run_bias`` for ``arch`` (e.g. sm_90a).
    With ``keep_ptx`` the PTX and cubin stay reachable as ``__ptx__`` / ``__cubin__`` (the DSL
    writes them to a dump directory and reads them back: the bracket form ``KeepPTX`` is
    dropped once an options string is given)."""
    if out_dtype != "bf16":
        raise NotImplementedError(f"out_dtype={out_dtype!r}: only 'bf16' is implemented")
    entry = kernel.run_bias if has_bias else kernel.run
    opts = [f"--gpu-arch {arch}", "--enable-tvm-ffi"]
    with COMPILE_LOCK:
        if not keep_ptx:
            return cute.compile(entry, *fake_args(has_bias), options=" ".join(opts))
        with tempfile.TemporaryDirectory(prefix=f"fastdispatch_{arch}_") as d:
            opts += ["--keep-ptx", "--keep-cubin", f"--dump-dir {d}"]
            return cute.compile(entry, *fake_args(has_bias), options=" ".join(opts))


def ptx_of(compiled) -> str:
    """The PTX a ``keep_ptx`` compile kept."""
    ptx = compiled.__ptx__
    if not ptx:
        raise RuntimeError("cute.compile produced no PTX")
    return ptx
