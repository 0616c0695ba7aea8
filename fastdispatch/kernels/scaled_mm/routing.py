"""Which implementation serves a ``scaled_mm`` problem (per miss; pure: no GPU needed).

The dispatcher's key holds every property read here (dtypes, shapes, strides, 16-byte
alignment, device), so the choice made at a key's miss holds for each of its hits.
"""
from __future__ import annotations

import torch

from fastdispatch.kernels.scaled_mm.args import _FLOAT8, FP8, recipe_of, tma_aligned

#: What the Blackwell kernel computes (compile-only here: no sm_100 GPU to extend it on).
SM100_RECIPES = ("tensorwise", "rowwise")
#: Blockwise 1x128 x 128x128 above this M goes to torch._scaled_mm where K is a multiple of
#: 512 (where cuBLAS's blockwise kernel was checked correct: the DeepSeek-V3 shapes, 1.7e-3),
#: unless the table picks our 256x128 tile or a tile that fills the SMs (`fills_the_sms`), with
#: A's scales by TMA (`sm90.with_scale_a_layout`: torch's scale layout, M % 4 == 0): the
#: 256x128 tile ran 1.03-1.13x torch's blockwise at M = 4096 and 0.995-1.02x at 8192^3 in two
#: runs on the lent H200 (2026-12-02), the 128x176 tile the table keeps for N = 2112 at
#: M = 4096 0.92-0.95x then (`SPAN_TILES_OURS` since), the same 256x128 tile with its scales by
#: cp.async ~0.96-1.0x.
#: Elsewhere ours serves: at M = 200, K = 384 torch's blockwise result was 0.26 off the fp64
#: product, ours 1.7e-3-class.
BLOCKWISE_OURS_UP_TO_M = 128
#: ... and the spanning tiles the table takes for N = 2112 above `sm90.WAVES_UP_TO_M` (128x176,
#: and 128x192 in its place where that makes no more waves), since their promotion is traced
#: per tile class (`sm90.block_scales.SpanningFactors`): 4096x2112x7168 on the lent H200,
#: 128x176 112.1 us vs torch's blockwise 116.6 (2026-12-03, blockwise_run18.log; 121-124
#: before, with a select per column group), 128x192 in static passes 109.3-110.3 vs
#: 119.3-120.0 (2026-12-08, probe192*.log).
SPAN_TILES_OURS = ((128, 176), (128, 192))
#: From M = 129 to `sm90.WAVES_UP_TO_M` our 256x128 tile runs only from this N: on the lent H200
#: (2026-12-02, two probe runs) 1.01-1.09x torch's blockwise at N = 24576 (M = 512-2048), but
#: 0.94-1.05x at N = 4096 / 7168 (512x7168x2048 0.965x, 1024x4096x7168 0.98-0.99x,
#: 2048x7168x16384 0.94-0.96x; bench/results/h200_2026-12-02/probeW_waves.log, probeF_final_picks.log).
MID_M_ROW_BLOCKS_FROM_N = 16384
#: Tiles (tile_m, tile_n, tile_k) of our small-M blockwise configs (B per 128x128) that lose to
#: cuBLAS where K is a multiple of 512: 128x128x128, which the table keeps for 128 rows where
#: N makes 67-132 of them (N = 8.5k-16.9k); on the lent H200 (2026-12-03,
#: bench/results/h200_2026-12-03/routeprobe.log) 0.92x torch's blockwise at 128x12288x1536,
#: 0.99x at 128x16384x7168, 0.94x at 128x16384x2048. (The 128x128x256 tile that lost at
#: 128x24576x1536 is gone: 2 stages; 128x192 tiles serve there, 1.02-1.06x torch.)
BLOCKWISE_TORCH_TILES = ((128, 128, 128),)


def fills_the_sms(cfg) -> bool:
    """Whether a blockwise config above M = 128 is one of the tiles the wave rule takes to fill
    the SMs (`sm90.block_tile_by_waves`: 64 rows, or narrower than 128, or 160 wide), where
    cuBLAS leaves SMs idle: on the lent H200 (2026-12-02, A's scales by TMA) 256x2112x7168
    64x64 1.47-1.52x torch's blockwise, 256x4096x7168 64x128 1.05-1.07x, 512x2112x7168 128x64
    1.13-1.16x, 1024x2112x7168 128x160 1.21-1.23x, 2048x2112x7168 0.99-1.03x (two runs each:
    the second with the final rule's clusters); the 128x128 tile
    it keeps at one wave ran 0.92-1.0x, 128x192 0.95-0.97x
    (bench/results/h200_2026-12-02/probeW_waves.log, probeF_final_picks.log)."""
    return cfg.row_blocks == 1 and (cfg.tile_m == 64 or cfg.tile_n < 128 or cfg.tile_n == 160)


def variant_for(capability: tuple[int, int] | None) -> str:
    """The kernel family for a device capability (None = CPU): 'reference', 'sm90', 'sm100'
    or 'torch' (torch._scaled_mm: GPUs we have no kernel for)."""
    if capability is None:
        return "reference"
    if capability == (9, 0):
        return "sm90"
    if capability[0] == 10 and capability[1] in (0, 3):
        return "sm100"
    return "torch"


def _name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _leading_ok(row_stride: int, unit_stride: int, k: int) -> bool:
    # A padded K-major operand the binaries take: unit stride along K, the other stride >= K and
    # a multiple of 16 fp8 elements (16 bytes: TMA's stride granularity).
    return unit_stride == 1 and row_stride >= k and row_stride % 16 == 0


def kernel_gap(family: str, a, b, scale_a, scale_b, bias, scale_result, out_dtype, out=None) -> str | None:
    """Why the ``family`` ('sm90' / 'sm100') kernel cannot compute this problem, or None.
    Assumes the arguments passed :func:`~fastdispatch.kernels.scaled_mm.args.check_args`."""
    (m, k), n = a.shape, b.shape[1]
    recipe = recipe_of(a, b, scale_a, scale_b)
    types = f"{recipe or 'MX/NVFP4'} {_name(a.dtype)} x {_name(b.dtype)} -> {_name(out_dtype)}"
    try:
        if family == "sm90":
            from fastdispatch.kernels.scaled_mm import sm90
            supported = recipe is not None and sm90.kernel_supports(a.dtype, b.dtype, out_dtype, recipe)
            padded = getattr(sm90, "PADDED_STRIDES", False)
        else:
            from fastdispatch.kernels.scaled_mm import sm100  # noqa: F401  (the kernel must import)
            supported = recipe in SM100_RECIPES and a.dtype == b.dtype == FP8 and out_dtype == torch.bfloat16
            padded = False
    except ImportError as exc:   # nvidia-cutlass-dsl missing: cuBLAS still serves
        return f"CuTe DSL unavailable ({exc})"
    if not supported:
        return f"the {family} kernel does not implement {types}"
    if family == "sm90" and recipe == "block_1x128_128x128" and k % 512 == 0:
        cfg = sm90.default_config(m, n, k, scales=recipe)
        if m > BLOCKWISE_OURS_UP_TO_M:
            large = sm90.with_scale_a_layout(cfg, scale_a)
            if large.row_blocks > 1:   # the 256x128 tile
                ours = m > sm90.WAVES_UP_TO_M or n >= MID_M_ROW_BLOCKS_FROM_N
            else:
                ours = fills_the_sms(large) or (m > sm90.WAVES_UP_TO_M
                                                and (large.tile_m, large.tile_n) in SPAN_TILES_OURS)
            if not (large.scale_a_tma and ours):
                return (f"blockwise at M = {m} > {BLOCKWISE_OURS_UP_TO_M}: cuBLAS's blockwise kernel is faster "
                        f"there than our {cfg.tile_m * cfg.row_blocks}x{cfg.tile_n} tile"
                        f"{'' if large.scale_a_tma else ' with scale_a not a TMA source'} (0.91-1.0x on the H200)")
        elif (cfg.tile_m, cfg.tile_n, cfg.tile_k) in BLOCKWISE_TORCH_TILES:
            return (f"blockwise at M = {m}, N = {n}: our {cfg.tile_m}x{cfg.tile_n}x{cfg.tile_k} tile is slower than "
                    f"cuBLAS's blockwise kernel there (0.92-0.99x at M = 128, N = 12288-16384 on the H200)")
    if scale_result is not None and out_dtype in _FLOAT8:
        return "scale_result (the kernels have no output scale)"
    if bias is not None and bias.dtype != out_dtype:
        return f"bias {_name(bias.dtype)} with {_name(out_dtype)} out"
    if a.stride() != (k, 1) or b.stride() != (1, k):
        if not padded:
            return f"padded operands (a stride {a.stride()}, b stride {b.stride()}): the {family} kernel takes compact ones"
        if not (_leading_ok(a.stride(0), a.stride(1), k) and _leading_ok(b.stride(1), b.stride(0), k)):
            return f"operand strides a {a.stride()}, b {b.stride()} (leading dimension not a multiple of 16 >= K)"
    if out is not None and out.stride() != (n, 1):
        return f"out stride {out.stride()} (the kernels write row-major contiguous)"
    # Tensorwise scales reach the binary as fresh expanded copies; a bias that is not compact
    # as a fresh contiguous copy (`api._bias_fix`): their own pointers do not matter.
    scales = () if recipe == "tensorwise" else (scale_a, scale_b)
    plain_bias = (bias,) if bias is not None and bias.is_contiguous() else ()
    if not tma_aligned(a, b, *scales, *plain_bias, *((out,) if out is not None else ())):
        return "a data pointer not 16-byte aligned (TMA needs 16)"
    return None


def route(capability, a, b, scale_a, scale_b, bias, scale_result, out_dtype, out=None) -> tuple[str, str | None]:
    """(variant, fallback reason) for a validated problem on a device of ``capability`` (None =
    CPU). Variants: 'empty' (M, N or K is 0: torch returns early, K = 0 as zeros without the
    bias), 'reference' (CPU), 'sm90' / 'sm100' (our kernels), 'torch' (torch._scaled_mm; the
    reason says why our kernel does not serve it, None where there is no kernel for the GPU)."""
    (m, k), n = a.shape, b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return "empty", None
    family = variant_for(capability)
    if family in ("reference", "torch"):
        return family, None
    why = kernel_gap(family, a, b, scale_a, scale_b, bias, scale_result, out_dtype, out)
    return (family, None) if why is None else ("torch", why)
