"""Compiling a scaled_mm kernel object (per config, never per call), shared by sm90 and sm100.

One binary per (config, bias) for every M/N/K: the arguments are fake tensors with symbolic
sizes, TVM-FFI is on (torch tensors in, torch's current stream), and ``--gpu-arch`` makes the
compile independent of the local GPU. ``cute.compile`` is not thread-safe: every compile holds
the process-wide lock of the CuTe backend.
"""
from __future__ import annotations

import dataclasses
import tempfile

import cutlass
import cutlass.cute as cute
from cutlass.cute.runtime import make_fake_compact_tensor, make_fake_stream, make_fake_tensor

from fastdispatch.backends.cute import COMPILE_LOCK


def resolve_stages(config, field: str, most: int):
    """``config`` with its ring depth ``field`` filled in with ``most`` (the deepest ring that
    fits SMEM) when unset, or checked against it when set (the kernels' ``resolved()``)."""
    stages = getattr(config, field)
    if stages is None:
        return dataclasses.replace(config, **{field: most})
    if stages > most:
        raise ValueError(f"{field}={stages} does not fit in SMEM (at most {most})")
    return config


def fake_args(has_bias: bool) -> list:
    """(a, b, scale_a, scale_b, out[, bias], stream) in torch._scaled_mm's own layouts, with
    symbolic M, N, K: a [M, K] row-major, b [K, N] column-major, rowwise scales [M, 1] and
    [1, N] (the stride of their size-1 dimension is free: torch reports several for the same
    contiguous data), out [M, N] row-major, bias [N]. So the hot path passes the caller's
    tensors as they are (no ``b.t()`` or reshapes per call: ~0.5 us each); `TorchLayoutEntries`
    makes the kernels' views. The divisibility is what TMA needs for 16-byte strides."""
    m = cute.sym_int32(symbol="M")
    n = cute.sym_int32(divisibility=8, symbol="N")
    k = cute.sym_int32(divisibility=16, symbol="K")
    row_major = dict(stride_order=(1, 0), assumed_align=16)
    args = [
        make_fake_compact_tensor(cutlass.Float8E4M3FN, (m, k), **row_major),  # a
        make_fake_tensor(cutlass.Float8E4M3FN, (k, n), (1, k), assumed_align=16),  # b
        make_fake_tensor(cutlass.Float32, (m, 1), (1, cute.sym_int32(symbol="SA1")), assumed_align=16),
        make_fake_tensor(cutlass.Float32, (1, n), (cute.sym_int32(symbol="SB0"), 1), assumed_align=16),
        make_fake_compact_tensor(cutlass.BFloat16, (m, n), **row_major),  # out
    ]
    if has_bias:
        args.append(make_fake_compact_tensor(cutlass.BFloat16, (n,), assumed_align=16))
    args.append(make_fake_stream(use_tvm_ffi_env_stream=True))
    return args


def _operand_views(b, scale_a, scale_b):
    """torch's layouts -> the kernels' operands, as views (no data moves): Bt [N, K] row-major
    (K-major B, the layout both Hopper and Blackwell fp8 MMAs read) from b [K, N]
    column-major; unit-stride scale vectors [M] and [N] from the [M, 1] / [1, N] scales."""
    bt = cute.make_tensor(b.iterator, cute.select(b.layout, mode=[1, 0]))
    scale_a_vec = cute.make_tensor(scale_a.iterator, cute.make_layout((scale_a.shape[0],)))
    scale_b_vec = cute.make_tensor(scale_b.iterator, cute.make_layout((scale_b.shape[1],)))
    return bt, scale_a_vec, scale_b_vec


class TorchLayoutEntries:
    """Base of the scaled_mm kernel classes: the two entry points `compile_kernel` traces,
    taking torch._scaled_mm's layouts (`fake_args`) and handing the operand views to the
    subclass's ``_launch(a, bt, scale_a, scale_b, out, bias, stream)``."""

    @cute.jit
    def run(self, a, b, scale_a, scale_b, out, stream):
        """Entry without bias: fn(a, b, scale_a, scale_b, out)."""
        bt, scale_a_vec, scale_b_vec = _operand_views(b, scale_a, scale_b)
        self._launch(a, bt, scale_a_vec, scale_b_vec, out, None, stream)

    @cute.jit
    def run_bias(self, a, b, scale_a, scale_b, out, bias, stream):
        """Entry with bias: fn(a, b, scale_a, scale_b, out, bias)."""
        bt, scale_a_vec, scale_b_vec = _operand_views(b, scale_a, scale_b)
        self._launch(a, bt, scale_a_vec, scale_b_vec, out, bias, stream)


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
