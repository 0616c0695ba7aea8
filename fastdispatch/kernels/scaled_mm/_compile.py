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


#: CuTe element types by the configs' dtype names.
_CUTE_TYPES = {"e4m3": cutlass.Float8E4M3FN, "e5m2": cutlass.Float8E5M2, "bf16": cutlass.BFloat16,
               "fp16": cutlass.Float16}


@dataclasses.dataclass(frozen=True)
class ArgSpec:
    """What a binary's arguments look like: element types, the scale recipe, and whether A's
    row stride and B's column stride are free (padded leading dimensions) or exactly K."""

    a_dtype: str = "e4m3"
    b_dtype: str = "e4m3"
    out_dtype: str = "bf16"
    scales: str = "rowwise"
    padded: bool = False
    #: Block scale_a with unit stride along M and a 16-byte column stride and pointer (a TMA source).
    scale_a_tma: bool = False


def fake_args(has_bias: bool, spec: ArgSpec = ArgSpec()) -> list:
    """(a, b, scale_a, scale_b, out[, bias], stream) in torch._scaled_mm's own layouts, with
    symbolic M, N, K: a [M, K] row-major, b [K, N] column-major, out [M, N] row-major, bias
    [N]. Rowwise scales are [M, 1] and [1, N] (the stride of their size-1 dimension is free:
    torch reports several for the same contiguous data); block scales are torch's 2-D
    BlockWise tensors ([M, KB] and [KB, ceil(N/128)] or [KB, N], KB = ceil(K/128)) with
    free strides (torch's outer-dim-major layouts, or any other; ``spec.scale_a_tma``: scale_a
    with unit stride along M and a 16-byte column stride). So the hot path passes the
    caller's tensors as they are (no ``b.t()`` or reshapes per call: ~0.5 us each);
    `TorchLayoutEntries` makes the kernels' views. With ``spec.padded`` A's row stride and
    B's column stride are symbolic too (views into larger buffers). The divisibility is what
    TMA needs for 16-byte strides."""
    m = cute.sym_int32(symbol="M")
    n = cute.sym_int32(divisibility=8, symbol="N")
    k = cute.sym_int32(divisibility=16, symbol="K")
    lda = cute.sym_int32(divisibility=16, symbol="LDA") if spec.padded else k
    ldb = cute.sym_int32(divisibility=16, symbol="LDB") if spec.padded else k
    a_type, b_type, out_type = (_CUTE_TYPES[spec.a_dtype], _CUTE_TYPES[spec.b_dtype],
                                _CUTE_TYPES[spec.out_dtype])
    if spec.scales == "rowwise":
        scales = [
            make_fake_tensor(cutlass.Float32, (m, 1), (1, cute.sym_int32(symbol="SA1")), assumed_align=16),
            make_fake_tensor(cutlass.Float32, (1, n), (cute.sym_int32(symbol="SB0"), 1), assumed_align=16),
        ]
    else:
        kb = cute.sym_int32(symbol="KB")
        b_cols = cute.sym_int32(symbol="NB") if spec.scales == "block_1x128_128x128" else n
        if spec.scale_a_tma:
            scale_a = make_fake_tensor(cutlass.Float32, (m, kb), (1, cute.sym_int32(divisibility=4, symbol="SA1")),
                                       assumed_align=16)
        else:
            scale_a = make_fake_tensor(cutlass.Float32, (m, kb),
                                       (cute.sym_int32(symbol="SA0"), cute.sym_int32(symbol="SA1")), assumed_align=4)
        scales = [
            scale_a,
            make_fake_tensor(cutlass.Float32, (kb, b_cols),
                             (cute.sym_int32(symbol="SB0"), cute.sym_int32(symbol="SB1")), assumed_align=4),
        ]
    args = [
        make_fake_tensor(a_type, (m, k), (lda, 1), assumed_align=16),  # a
        make_fake_tensor(b_type, (k, n), (1, ldb), assumed_align=16),  # b
        *scales,
        make_fake_compact_tensor(out_type, (m, n), stride_order=(1, 0), assumed_align=16),  # out
    ]
    if has_bias:
        args.append(make_fake_compact_tensor(out_type, (n,), assumed_align=16))
    args.append(make_fake_stream(use_tvm_ffi_env_stream=True))
    return args


def _operand_views(b, scale_a, scale_b, rowwise: bool):
    """torch's layouts -> the kernels' operands, as views (no data moves): Bt [N, K] row-major
    (K-major B, the layout both Hopper and Blackwell fp8 MMAs read) from b [K, N]
    column-major; unit-stride scale vectors [M] and [N] from the [M, 1] / [1, N] rowwise
    scales (block scales stay the 2-D tensors they are: the kernel indexes them per k-tile)."""
    bt = cute.make_tensor(b.iterator, cute.select(b.layout, mode=[1, 0]))
    if rowwise:
        scale_a = cute.make_tensor(scale_a.iterator, cute.make_layout((scale_a.shape[0],)))
        scale_b = cute.make_tensor(scale_b.iterator, cute.make_layout((scale_b.shape[1],)))
    return bt, scale_a, scale_b


class TorchLayoutEntries:
    """Base of the scaled_mm kernel classes: the two entry points `compile_kernel` traces,
    taking torch._scaled_mm's layouts (`fake_args`) and handing the operand views to the
    subclass's ``_launch(a, bt, scale_a, scale_b, out, bias, stream)``."""

    #: Block scales (2-D BlockWise tensors) instead of rowwise vectors; subclasses set it.
    blockwise = False

    @cute.jit
    def run(self, a, b, scale_a, scale_b, out, stream):
        """Entry without bias: fn(a, b, scale_a, scale_b, out)."""
        bt, scale_a_vec, scale_b_vec = _operand_views(b, scale_a, scale_b, not self.blockwise)
        self._launch(a, bt, scale_a_vec, scale_b_vec, out, None, stream)

    @cute.jit
    def run_bias(self, a, b, scale_a, scale_b, out, bias, stream):
        """Entry with bias: fn(a, b, scale_a, scale_b, out, bias)."""
        bt, scale_a_vec, scale_b_vec = _operand_views(b, scale_a, scale_b, not self.blockwise)
        self._launch(a, bt, scale_a_vec, scale_b_vec, out, bias, stream)


def compile_kernel(kernel, arch: str, has_bias: bool, out_dtype: str, *, keep_ptx: bool,
                   spec: ArgSpec | None = None):
    """``cute.compile`` of ``kernel.run`` / ``kernel.run_bias`` for ``arch`` (e.g. sm_90a).
    With ``keep_ptx`` the PTX and cubin stay reachable as ``__ptx__`` / ``__cubin__`` (the DSL
    writes them to a dump directory and reads them back: the bracket form ``KeepPTX`` is
    dropped once an options string is given)."""
    spec = spec or ArgSpec(out_dtype=out_dtype)
    if spec.out_dtype != out_dtype:
        raise ValueError(f"out_dtype={out_dtype!r} differs from the argument spec's {spec.out_dtype!r}")
    entry = kernel.run_bias if has_bias else kernel.run
    opts = [f"--gpu-arch {arch}", "--enable-tvm-ffi"]
    with COMPILE_LOCK:
        if not keep_ptx:
            return cute.compile(entry, *fake_args(has_bias, spec), options=" ".join(opts))
        with tempfile.TemporaryDirectory(prefix=f"fastdispatch_{arch}_") as d:
            opts += ["--keep-ptx", "--keep-cubin", f"--dump-dir {d}"]
            return cute.compile(entry, *fake_args(has_bias, spec), options=" ".join(opts))


def ptx_of(compiled) -> str:
    """The PTX a ``keep_ptx`` compile kept."""
    ptx = compiled.__ptx__
    if not ptx:
        raise RuntimeError("cute.compile produced no PTX")
    return ptx
