"""Blackwell (sm_100a, tcgen05) fp8 e4m3 GEMM with rowwise scales, in CuTe DSL (per key).

    out[m, n] = bf16((A[m, :] @ Bt[n, :]) * scale_a[m] * scale_b[n] (+ bias[n]))

The binary takes torch._scaled_mm's layouts (A e4m3 [M, K] row-major, B e4m3 [K, N]
column-major, scales fp32 [M, 1] and [1, N], optional bias bf16 [N], out bf16 [M, N]) and views
B as Bt [N, K] row-major (K-major) and the scales as vectors (`_compile.TorchLayoutEntries`); fp32
accumulation in tensor memory, both scales (and the bias) applied in fp32 before the one bf16
rounding.

Structure (one CTA pair = one 2-CTA MMA tile of tile_m x tile_n):
- persistent: one cluster per `num_sms / cluster_size` slots, walking output tiles with our
  own static, L2-grouped tile order (`_tile_coords`), identical in every role;
- role-local warp specialization: warps 0-3 epilogue (one TMEM lane quarter each), warp 4
  MMA (leader CTA of the pair issues `tcgen05.mma.cta_group::2`), warp 5 TMA loads;
- A/B ring of `ab_stages` SMEM stages (as many as the SMEM budget allows: 8 at
  256x128x128) filled by one rolled producer K-loop whose blocking acquire is the only
  wait (no unrolled prologue, no per-iteration "peek" predicates);
- `acc_stages` (2) fp32 accumulators in TMEM so the epilogue of tile i overlaps the
  mainloop of tile i+1;
- epilogue per (cta_m x epi_n) subtile: scale_b (and bias) for those columns read right
  then (clamped 128-bit loads, no predicates), tcgen05.ld, multiply by scale_a (one
  register per tile: the 32x32b TMEM load gives each thread one row) and scale_b in fp32,
  bf16 to SMEM, TMA store (OOB rows/columns are clipped by TMA: partial tiles need no masks).

Requirements on the arguments (the dispatcher checks them, the binary assumes them):
16-byte aligned data pointers, contiguous row-major tensors, K % 16 == 0, N % 8 == 0,
M, N, K >= 1. `compile_sm100` builds one binary for all M/N/K; it is compiled for sm_100a
without a GPU (`ptx_sm100`) and was never run here: "compiled, not run".

The parts, by lifetime: `config` (the hashable `Sm100Config`, the SMEM budget and the table:
plain Python, per miss), `kernel` (`ScaledMmSm100`: the launch and the warp roles, traced per
compile), `epilogue` (its TMEM -> SMEM -> TMA-store epilogue, traced per compile); this module
compiles them (`compile_sm100`, `ptx_sm100`).
"""

from __future__ import annotations

from fastdispatch.kernels.scaled_mm._compile import compile_kernel, ptx_of
from fastdispatch.kernels.scaled_mm.sm100.config import (  # noqa: F401  (the module's names before the split)
    ARCH, B200_SMS, SMEM_CAPACITY, SMEM_RESERVED, Sm100Config, _epilogue_bytes, _stage_bytes, default_config,
    max_ab_stages, smem_bytes)
from fastdispatch.kernels.scaled_mm.sm100.kernel import ScaledMmSm100  # noqa: F401

__all__ = [
    "Sm100Config",
    "compile_sm100",
    "default_config",
    "max_ab_stages",
    "ptx_sm100",
    "smem_bytes",
]


def compile_sm100(config: Sm100Config, *, has_bias: bool, out_dtype="bf16", keep_ptx=False):
    """Compile the kernel for sm_100a: one binary for all M/N/K, TVM-FFI enabled.

    Call the result with torch tensors, on torch's current stream (graph capture works):
    ``fn(a, b, scale_a, scale_b, out)`` (torch._scaled_mm's layouts: b [K, N] column-major,
    scales [M, 1] and [1, N]) or, with ``has_bias``, ``fn(..., out, bias)``
    (4.8.1 wraps it in a kwargs wrapper; ``fn.__tvm_ffi_object__()`` is the fast path).
    See the module docstring for the argument requirements. ``keep_ptx`` keeps the PTX
    and cubin reachable as ``fn.__ptx__`` / ``fn.__cubin__``. Compiles under a process
    lock (cute.compile is not thread-safe); compiling needs no GPU.
    """
    if out_dtype != "bf16":   # the epilogue writes bf16 (its TMA store and SMEM staging)
        raise NotImplementedError(f"out_dtype={out_dtype!r}: only 'bf16' is implemented")
    return compile_kernel(ScaledMmSm100(config.resolved(), has_bias), ARCH, has_bias, out_dtype,
                          keep_ptx=keep_ptx)


def ptx_sm100(config: Sm100Config, *, has_bias: bool = False) -> str:
    """Compile for sm_100a (no GPU needed) and return the kernel's PTX."""
    return ptx_of(compile_sm100(config, has_bias=has_bias, keep_ptx=True))
