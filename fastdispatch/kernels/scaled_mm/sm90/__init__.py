"""Hopper (sm_90a, WGMMA) fp8 GEMM with rowwise or block scales, in CuTe DSL (per key).

    out[m, n] = bf16((A[m, :] @ Bt[n, :]) * scale_a[m] * scale_b[n] (+ bias[n]))

The binary takes torch._scaled_mm's layouts (A e4m3 [M, K] row-major, B e4m3 [K, N]
column-major, rowwise scales fp32 [M, 1] and [1, N], optional bias bf16 [N], out bf16 [M, N]
row-major) and views them as the kernel's operands without moving data: Bt [N, K] row-major
(K-major B: Hopper fp8 WGMMA reads both operands K-major only) and unit-stride scale vectors
(`_compile.TorchLayoutEntries`). Accumulation in fp32 registers; both scales (and the bias) are
applied in fp32 before the one bf16 rounding.

Tensorwise scales: the kernel always reads one scale per row of A and per column of B; a
caller with tensorwise (one-element) scales passes them expanded to contiguous [M, 1] and
[1, N] (``api._kernel_call`` does this). Contiguous, not stride-0 views: the binary assumes
unit stride.

Structure (one CTA per SM, clusters of ``cluster_m x cluster_n`` CTAs):
- persistent: the grid holds ``num_sms // cluster size`` clusters that walk the output tiles
  in our own static, L2-grouped order (`_tile_coords`), the same in every role;
- warp specialization: warpgroup 0 is the producer (warp 0 issues the TMA loads of A and Bt,
  multicast across the cluster where ``cluster_m/n > 1``; its registers are given to the
  consumers with ``setmaxnreg``), warpgroups 1..``consumer_wgs`` issue WGMMA and run the
  epilogue; the consumers split the tile along M (64 or 128 rows each);
- a ``stages``-deep A/B SMEM ring (`PipelineTmaAsync`); a consumer frees a stage once the
  MMAs reading it retired: with fast accumulation it keeps one k-tile of WGMMAs in flight
  (``wgmma.wait_group 1``) and frees the k-tile before; promoting every k-tile, it waits for
  that k-tile's WGMMAs anyway (``wait_group 0``) and frees its stage at once; with
  ``overlap_promotion`` two temporaries alternate so each promotion runs under the next
  k-tile's WGMMAs (``wait_group 1``), in groups drained at the loop edge (ptxas serializes
  WGMMAs whose accumulators are carried in flight through a loop or branch merge);
- epilogue: the fp32 accumulator is scaled in place (row scale x column scale, + bias) with
  coordinates from an identity tensor partitioned like the accumulator, then either staged
  through SMEM (``stmatrix``) and written with TMA stores in ``tile_m x epi_n`` subtiles (the
  normal path; TMA clips partial tiles; the whole tile at once when ``epi_stages`` buffers
  hold it), or written with predicated stores (``swap_ab``).

Small M (decode, M <= 128) is bandwidth-bound on B: ``swap_ab`` computes out^T = Bt @ A^T so
that N fills the MMA's 64-row side and M (8..128) its N side; the grid then has N / 64 tiles.
Where those are few (N <= 4224), ``split_k`` gives each tile a cluster of CTAs that split its
K range and sum their fp32 partials in rank order through distributed SMEM (``st.async`` into
rank 0's SMEM, mbarrier hand-off both ways): twice the SMs streaming Bt, no global workspace,
and the same bits every run. Small-M configs also launch with programmatic dependent launch
(``pdl``): their fixed cost (launch, barrier init) overlaps the previous kernel's tail.

Block scales (torch's BlockWise1x128 for A with BlockWise128x128 or BlockWise1x128 for B,
the DeepSeek-V3 recipe): the scale factors of each 128-deep k-tile multiply its partial sum
where it is promoted into the fp32 accumulator (`block_scales`), so they cost an FMA in
place of the promotion's add, plus a few L2-resident loads per k-tile; the epilogue adds
only the bias.

Element types: e4m3 or e5m2 operands (each its own; WGMMA reads either), bf16 or fp16 out
(the same 16-bit stmatrix/TMA epilogue), bias in the output's type.

Requirements on the arguments (the dispatcher checks them, the binary assumes them): 16-byte
aligned data pointers, A's row stride and B's column stride multiples of 16 elements (>= K:
padded leading dimensions are TMA strides), out contiguous row-major, K % 16 == 0,
N % 8 == 0, M, N, K >= 1. One binary per (config, bias) serves every M/N/K.

The package, by part and lifetime:
- `config` (per key, plain Python): `Sm90Config`, the scale recipes and dtypes tables, SMEM
  sizing;
- `table` (per miss, plain Python): the named and shipped configs and `default_config`;
- `kernel` (per compile, device code): `ScaledMmSm90` and the `kernel` function (roles,
  SMEM carve-up, persistent tile walk);
- `launch` (per compile, host side traced once): the WGMMA, SMEM layouts, TMA atoms and grid
  of `_launch` (a mixin of the kernel);
- `producer` (device code): the TMA producer and the scale loader (a mixin of the kernel);
- `mainloop` (device code): the K loops (a mixin of the kernel); `ring_walks` how the block
  loops walk the A/B ring, `split_k` the split-K reduction (mixins);
- `row_blocks` (device code): the K loop of tiles of several A row blocks (a mixin);
- `pingpong` (device code): two consumer warpgroups taking turns at tiles (a mixin);
- `epilogue` (device code): scales, bias and the stores (a mixin of the kernel);
- `block_scales` (device code): the BlockWise factors applied at each promotion;
- `smem_scales` (device code): the consumers' view of the scale ring (and its TMA views);
- here (per key): `compile_sm90`, `raw_callable`, `ptx_sm90`.
"""

from __future__ import annotations

import dataclasses

from fastdispatch.kernels.scaled_mm._compile import ArgSpec, compile_kernel, ptx_of
from fastdispatch.kernels.scaled_mm.sm90 import block_scales  # noqa: F401  (sm90.block_scales)
from fastdispatch.kernels.scaled_mm.sm90.config import (  # noqa: F401  (the module's names before the split)
    _TORCH_NAMES, ARCH, H100_SMS, IMPLEMENTED, OPERAND_DTYPES, OUT_DTYPES, PADDED_STRIDES, SCALE_A_TMA_ABOVE_M,
    SCALE_RECIPES, Sm90Config, dtype_name, kernel_supports, scale_a_tma_ok, with_scale_a_layout)
from fastdispatch.kernels.scaled_mm.sm90.smem_budget import (  # noqa: F401
    SMEM_CAPACITY, SMEM_RESERVED, _epilogue_bytes, _reduce_bytes, _stage_bytes, max_stages, smem_bytes)
from fastdispatch.kernels.scaled_mm.sm90.table import (  # noqa: F401
    BLOCK_LARGE, BLOCK_SPAN, BLOCK_SPAN_WIDE, BLOCK_WAVES, FAST_LARGE, FAST_PINGPONG, LARGE, LARGE_EARLY,
    LARGE_WIDE, MEDIUM, ONE_WARPGROUP_COST, ROW_BLOCKS_GAIN, ROWWISE_LARGE, ROWWISE_LARGE_FROM_M, ROWWISE_WAVES, SMALL_M_WIDE, SPAN_TILE_GAIN,
    TILE_FIXED_COST, WAVES_UP_TO_M,
    _small_m_block_config, _small_m_config, _waves, block_tile_by_waves, default_config, shipped_configs)
from fastdispatch.kernels.scaled_mm.sm90.kernel import ScaledMmSm90  # noqa: F401

__all__ = [
    "Sm90Config",
    "compile_sm90",
    "default_config",
    "kernel_supports",
    "max_stages",
    "ptx_sm90",
    "scale_a_tma_ok",
    "with_scale_a_layout",
    "raw_callable",
    "smem_bytes",
]


def compile_sm90(config: Sm90Config, *, has_bias: bool, out_dtype=None, keep_ptx: bool = False):
    """Compile the kernel for sm_90a: one binary for all M/N/K, TVM-FFI enabled.

    Call the result with torch tensors, on torch's current stream (graph capture works):
    ``fn(a, b, scale_a, scale_b, out)`` (torch._scaled_mm's layouts: b [K, N] column-major,
    scales [M, 1] and [1, N]) or, with ``has_bias``, ``fn(..., out, bias)``.
    4.8.1 wraps it in a kwargs wrapper; `raw_callable` gives the positional fast path. See the
    package docstring for the argument requirements. ``keep_ptx`` keeps the PTX and cubin
    reachable as ``fn.__ptx__`` / ``fn.__cubin__``. Compiles under a process lock
    (cute.compile is not thread-safe); compiling needs no GPU.
    """
    cfg = config.resolved()
    if out_dtype is not None and out_dtype != cfg.out_dtype:   # the older keyword still works
        cfg = dataclasses.replace(cfg, out_dtype=out_dtype)
    spec = ArgSpec(a_dtype=cfg.a_dtype, b_dtype=cfg.b_dtype, out_dtype=cfg.out_dtype, scales=cfg.scales,
                   padded=PADDED_STRIDES, scale_a_tma=cfg.scale_a_tma)
    return compile_kernel(ScaledMmSm90(cfg, has_bias), ARCH, has_bias, cfg.out_dtype, keep_ptx=keep_ptx, spec=spec)


def raw_callable(compiled):
    """The positional TVM-FFI function under `compile_sm90`'s kwargs wrapper (~0.36 us a call
    on the lent H100, against several us through the wrapper)."""
    return compiled.__tvm_ffi_object__()


def ptx_sm90(config: Sm90Config, *, has_bias: bool = False) -> str:
    """Compile for sm_90a (no GPU needed) and return the kernel's PTX."""
    return ptx_of(compile_sm90(config, has_bias=has_bias, keep_ptx=True))
