"""``fastdispatch.functional.scaled_mm``: the twin of ``torch.nn.functional.scaled_mm`` (the
recipe API: scales with explicit ``ScalingType`` recipes), same arguments, names, order and
defaults, served by :func:`fastdispatch.scaled_mm` (per call: a dict lookup and the scale views
below, then that function's hot path).

The fp8 recipes ``torch._scaled_mm`` also infers from the scales map onto it: TensorWise x
TensorWise, RowWise x RowWise, and the DeepSeek blockwise pairs (BlockWise1x128 with
BlockWise128x128 or BlockWise1x128, BlockWise128x128 with BlockWise1x128), whose scales the
recipe API lays out differently (B's 1x128 scales [N, K/128], 128x128 scales padded to
[round_up(K/128, 4), MN/128]): they are turned into ``_scaled_mm``'s layout (views; a small copy
when K/128 is not a multiple of 4). Anything else (MX / NVFP4 recipes, swizzled scales, scale
lists, contraction dims, scales that do not match their recipe) goes to
``torch.nn.functional.scaled_mm`` itself, which computes it or raises torch's own error.

Torch releases without ``F.scaled_mm`` (the recipe API is newer than some pinned torch
versions): ``ScalingType`` / ``SwizzleType`` here are then our enums with torch's values, the
mapped recipes still work, and the rest raises NotImplementedError naming the torch version.
"""
from __future__ import annotations

import enum

import torch
import torch.nn.functional as F

from fastdispatch.kernels.scaled_mm.api import scaled_mm as _scaled_mm
from fastdispatch.kernels.scaled_mm.args import recipe_of

__all__ = ["scaled_mm", "ScalingType", "SwizzleType"]


class _ScalingType(enum.IntEnum):
    """torch.nn.functional.ScalingType's values (used where torch has no such enum)."""
    TensorWise = 0
    RowWise = 1
    BlockWise1x16 = 2
    BlockWise1x32 = 3
    BlockWise1x128 = 4
    BlockWise128x128 = 5


class _SwizzleType(enum.IntEnum):
    """torch.nn.functional.SwizzleType's values (used where torch has no such enum)."""
    NO_SWIZZLE = 0
    SWIZZLE_32_4_4 = 1


ScalingType = getattr(F, "ScalingType", _ScalingType)
SwizzleType = getattr(F, "SwizzleType", _SwizzleType)
_TORCH_SCALED_MM = getattr(F, "scaled_mm", None)


def _l(k: int) -> int:
    return -(-k // 128)


def _block_scale_b_1x128(a, b, sa, sb):      # [N, K/128] stride (1, N) -> [K/128, N] (a view)
    return sa, sb.t()


def _block_128x128_v1(s, k):
    # [round_up(K/128, 4), MN/128] stride (1, L4) -> _scaled_mm's [K/128, MN/128] stride (1, K/128)
    # for B, or its transpose for A: a view when K/128 needs no padding, else a compact copy.
    s = s[:_l(k)]
    return s if s.stride(1) == s.shape[0] or s.shape[1] == 1 else s.t().contiguous().t()


# (recipe_a, recipe_b) by value -> (scale_a, scale_b) in torch._scaled_mm's layout.
_MAPPED = {
    (0, 0): lambda a, b, sa, sb: (sa, sb),
    (1, 1): lambda a, b, sa, sb: (sa, sb),
    (4, 4): _block_scale_b_1x128,
    (4, 5): lambda a, b, sa, sb: (sa, _block_128x128_v1(sb, a.shape[1])),
    (5, 4): lambda a, b, sa, sb: (_block_128x128_v1(sa, a.shape[1]).t(), sb.t()),
}
_RECIPE_NAMES = {(0, 0): "tensorwise", (1, 1): "rowwise", (4, 4): "block_1x128_1x128",
                 (4, 5): "block_1x128_128x128", (5, 4): "block_128x128_1x128"}


def _value(x):
    return int(x.value) if hasattr(x, "value") else int(x)


def scaled_mm(mat_a, mat_b, scale_a, scale_recipe_a, scale_b, scale_recipe_b, swizzle_a=None, swizzle_b=None,
              bias=None, output_dtype=torch.bfloat16, contraction_dim=(), use_fast_accum=False):
    """``torch.nn.functional.scaled_mm`` with fastdispatch's kernels (see the module docstring).

    Example (CPU runs the fp32 reference)::

        >>> import torch, fastdispatch
        >>> from fastdispatch.functional import ScalingType
        >>> a = torch.randn(4, 32).to(torch.float8_e4m3fn)
        >>> b = torch.randn(16, 32).to(torch.float8_e4m3fn).t()
        >>> fastdispatch.functional.scaled_mm(a, b, torch.ones(4, 1), ScalingType.RowWise,
        ...                                   torch.ones(1, 16), ScalingType.RowWise).dtype
        torch.bfloat16
    """
    mapped = None
    if isinstance(scale_a, torch.Tensor) and isinstance(scale_b, torch.Tensor) and not contraction_dim \
            and _value(swizzle_a or 0) == 0 and _value(swizzle_b or 0) == 0 \
            and not isinstance(scale_recipe_a, (list, tuple)) and not isinstance(scale_recipe_b, (list, tuple)):
        recipes = (_value(scale_recipe_a), _value(scale_recipe_b))
        mapped = _MAPPED.get(recipes)
    if mapped is not None:
        sa, sb = mapped(mat_a, mat_b, scale_a, scale_b)
        # The recipe must be the one _scaled_mm infers from these scales (else F.scaled_mm's own
        # error): a shape/stride check, ~7 us per call on the CI CPU.
        if recipe_of(mat_a, mat_b, sa, sb) == _RECIPE_NAMES[recipes]:
            return _scaled_mm(mat_a, mat_b, sa, sb, bias, None, output_dtype, use_fast_accum)
    if _TORCH_SCALED_MM is None:
        raise NotImplementedError(
            f"fastdispatch.functional.scaled_mm: these recipes/scales need torch.nn.functional.scaled_mm, "
            f"which torch {torch.__version__} does not have (mapped here: TensorWise, RowWise and the "
            f"1x128/128x128 blockwise pairs, with scales matching their recipe)")
    return _TORCH_SCALED_MM(mat_a, mat_b, scale_a, scale_recipe_a, scale_b, scale_recipe_b, swizzle_a, swizzle_b,
                            bias, output_dtype, contraction_dim, use_fast_accum)
