"""``scaled_mm``'s argument checks, scale-recipe inference and fp32 reference (per miss).

What ``torch._scaled_mm`` accepts on sm_90 is the contract. :func:`check_args` runs torch's own
meta function (``_check_scaled_mm_sizes`` in ``torch/_meta_registrations.py``, on meta tensors
of the same shapes, strides and dtypes: torch's text for what it checks), then the checks that
only torch's CUDA implementation makes (``_scaled_mm_out_cuda`` in ATen's ``ScaledBlas.cpp``:
inner dimensions, blockwise scale strides, ``scale_result``, bias size and dtype, e5m2 x e5m2,
``out_dtype`` vs ``out``, one device), in its order, with its text and exception type (each
string is in the installed ``libtorch_cuda.so``). None of this runs on a hit: the dispatcher's
key holds every property looked at here (dtypes, shapes, strides, alignment, device).
"""
from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
_FLOAT8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                           "float8_e5m2fnuz") if hasattr(torch, n))
#: The scale recipes torch's ``_scaled_mm`` infers from the scales, in its priority order
#: (``get_joint_scaling``): (A's ScalingType, B's) -> our name. ``sm90.kernel_supports`` and
#: ``sm90.default_config`` take these names.
RECIPES = {
    ("TensorWise", "TensorWise"): "tensorwise",
    ("RowWise", "RowWise"): "rowwise",
    ("BlockWise128x128", "BlockWise1x128"): "block_128x128_1x128",
    ("BlockWise1x128", "BlockWise128x128"): "block_1x128_128x128",
    ("BlockWise1x128", "BlockWise1x128"): "block_1x128_1x128",
}


def _ceil(x: int, d: int) -> int:
    return -(-x // d)


def _size_stride(s, dim: int, size: int, stride: int) -> bool:
    # torch's check_size_stride: a dimension of size <= 1 has no meaningful stride.
    return s.size(dim) == size and (size <= 1 or s.stride(dim) == stride)


def _is_scaling(t, s, kind: str) -> bool:
    """torch's ``is_desired_scaling(t, scale, kind)`` for fp8 ``t`` (ScaledBlas.cpp)."""
    if t.dtype not in _FLOAT8 or s.dtype != torch.float32:
        return False
    if kind == "TensorWise":
        return s.numel() == 1
    if s.dim() != 2:
        return False
    rows, cols = t.shape
    if kind == "RowWise":
        return s.shape[0] == rows and s.shape[1] == 1 and s.is_contiguous()
    if kind == "BlockWise1x128":
        return _size_stride(s, 0, rows, 1) and _size_stride(s, 1, _ceil(cols, 128), rows)
    return (_size_stride(s, 0, _ceil(rows, 128), _ceil(cols, 128))
            and _size_stride(s, 1, _ceil(cols, 128), 1))


def recipe_of(a, b, scale_a, scale_b) -> str | None:
    """The recipe torch's ``_scaled_mm`` picks for these scales ('tensorwise', 'rowwise',
    'block_1x128_128x128', 'block_1x128_1x128', 'block_128x128_1x128'), or None (torch's MX /
    NVFP4 block scales, or no recipe: :func:`check_args` raises torch's error for those)."""
    bt, sbt = b.t(), scale_b.t()   # torch checks B's scales against b.t(), as the A side
    for (lhs, rhs), name in RECIPES.items():
        if _is_scaling(a, scale_a, lhs) and _is_scaling(bt, sbt, rhs):
            return name
    return None


def _meta(t):
    if not isinstance(t, torch.Tensor):
        return t
    return torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device="meta")


def _joint_scaling_error(a, b, scale_a, scale_b) -> RuntimeError:
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    c = _ceil
    return RuntimeError(
        "Invalid scaling configuration.\n"
        "- For TensorWise scaling, a and b should be float8, scales should be float and singletons.\n"
        f"- For RowWise scaling, a and b should be float8, scales should be float, scale_a should be ({m}, 1) "
        f"and scale_b should be (1, {n}), and both should be contiguous.\n"
        f"- For BlockWise 1x128 scaling, a and b should be float8, scales should be float, scale_a should be "
        f"({m}, {c(k, 128)}) and scale_b should be ({c(k, 128)}, {n}), and both should be outer-dim-major.\n"
        f"- For BlockWise 128x128 scaling, a and b should be float8, scales should be float, scale_a should be "
        f"({c(m, 128)}, {c(k, 128)}) and scale_b should be ({c(k, 128)}, {c(n, 128)}), and both should be "
        "near-inner-dim-major (with 16-byte aligned strides).\n"
        f"Got a.dtype()={a.dtype}, scale_a.dtype()={scale_a.dtype}, scale_a.size()={list(scale_a.shape)}, "
        f"scale_a.stride()={list(scale_a.stride())}, b.dtype()={b.dtype}, scale_b.dtype()={scale_b.dtype}, "
        f"scale_b.size()={list(scale_b.shape)} and scale_b.stride()={list(scale_b.stride())}")


def check_args(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None,
               use_fast_accum=False, out=None, *, on_meta: bool = True) -> str | None:
    """Raise what ``torch._scaled_mm`` raises on sm_90 for these arguments; return the recipe
    (:func:`recipe_of`). ``on_meta=False`` runs torch's meta function on the tensors as given
    (FakeTensors while tracing) instead of on meta copies. ~80 us per miss on the CI CPU (the meta
    call and the recipe inference, ~7 us of it), against ~3 us for a hit."""
    if out is not None and not isinstance(out, torch.Tensor):
        raise TypeError(f"_scaled_mm(): argument 'out' must be Tensor, not {type(out).__name__}")
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == 2 == b.dim() \
            and a.shape[1] != b.shape[0]:   # torch's CUDA op checks this first; its meta never
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({a.shape[0]}x{a.shape[1]} and "
                           f"{b.shape[0]}x{b.shape[1]})")
    devices = {t.device for t in (a, b, scale_a, scale_b, bias, scale_result, out) if isinstance(t, torch.Tensor)}
    if on_meta:   # every check below then runs on plain meta tensors (also outside a fake mode)
        a, b, scale_a, scale_b, bias, scale_result, out = map(
            _meta, (a, b, scale_a, scale_b, bias, scale_result, out))
    torch._scaled_mm(a, b, scale_a, scale_b, bias, scale_result, out_dtype, bool(use_fast_accum))
    # What the meta function lets through and torch's CUDA op refuses, in the CUDA op's order.
    recipe = recipe_of(a, b, scale_a, scale_b)
    mx = scale_a.dtype in (torch.float8_e8m0fnu, torch.float8_e4m3fn)   # MX / NVFP4: torch's own
    if recipe is None and not mx:
        raise _joint_scaling_error(a, b, scale_a, scale_b)
    n = b.shape[1]
    if scale_result is not None and (scale_result.numel() != 1 or scale_result.dtype != torch.float32):
        raise RuntimeError("scale_result must be a float scalar")
    if bias is not None and bias.numel() != n:
        raise RuntimeError(f"Bias must be size {n} but got {bias.numel()}")
    result_dtype = out.dtype if out is not None else (out_dtype or a.dtype)
    if out is not None and out_dtype is not None and out_dtype != out.dtype:
        raise RuntimeError("out_dtype must match output matrix type")
    if a.dtype == E5M2 and b.dtype == E5M2:
        raise ValueError("Multiplication of two Float8_e5m2 matrices is not supported")
    if use_fast_accum and recipe is not None and recipe.startswith("block_"):
        # cuBLAS's blockwise kernels promote every 128 of K by construction; torch names B's
        # recipe (H200, torch 2.11: 1x128 x 128x128 -> "128x128", the other two -> "1x128").
        kind = "128x128" if recipe.endswith("128x128") else "1x128"
        raise RuntimeError(f"scaled_gemm doesn't support fast accum with {kind} blockwise scaling")
    if bias is not None:
        if result_dtype == torch.float32:
            raise RuntimeError("Bias is not supported when out_dtype is set to Float32")
        if bias.dtype not in (torch.bfloat16, torch.float16):
            raise RuntimeError(f"Bias must be BFloat16 or Half, but got {_c10(bias.dtype)}")
        if result_dtype == torch.bfloat16 and bias.dtype != torch.bfloat16:
            raise RuntimeError(f"Bias must be BFloat16 to compute {_c10(result_dtype)} output, but got "
                               f"{_c10(bias.dtype)}")
        if result_dtype == torch.float16 and bias.dtype != torch.float16:
            raise RuntimeError(f"Bias must be Float16 to compute {_c10(result_dtype)} output, but got "
                               f"{_c10(bias.dtype)}")
    if len(devices) > 1:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                           f"devices, {', '.join(sorted(map(str, devices)))}!")
    return recipe


_C10_NAMES = {torch.float32: "Float", torch.float16: "Half", torch.bfloat16: "BFloat16"}


def _c10(dtype) -> str:
    # How c10 prints a ScalarType in TORCH_CHECK messages.
    return _C10_NAMES.get(dtype, str(dtype).removeprefix("torch."))


# -- the fp32 reference (CPU, and the semantics every path must match) -------------------------
def _expand(scale, rows: int, cols: int, block_rows: int, block_cols: int):
    # One scale per (block_rows x block_cols) block -> one per element of a rows x cols operand.
    s = scale.to(torch.float32)
    return s.repeat_interleave(block_rows, 0)[:rows].repeat_interleave(block_cols, 1)[:, :cols]


def reference(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None):
    """fp32 reference with ``torch._scaled_mm``'s semantics, any device: dequantize, scale (per
    tensor, row/column or 128-block of K), multiply in fp32, add the bias, then for an fp8
    output multiply by ``scale_result`` (cuBLAS's D scale: after the epilogue's bias), cast.
    Zero-size problems come back as torch returns them (K = 0: zeros, without the bias).
    ``out_dtype`` None is ``a.dtype``, as in torch."""
    out_dtype = out_dtype or a.dtype
    (m, k), n = a.shape, b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return torch.zeros((m, n), dtype=out_dtype, device=a.device)
    recipe = recipe_of(a, b, scale_a, scale_b)
    if recipe is None:
        raise NotImplementedError("scaled_mm reference: MX / NVFP4 block scales are not implemented "
                                  "(torch._scaled_mm serves them on GPUs that have them)")
    fa, fb = a.to(torch.float32), b.to(torch.float32)
    if recipe == "tensorwise":
        acc = (fa @ fb) * (scale_a.float().reshape(()) * scale_b.float().reshape(()))
    elif recipe == "rowwise":
        acc = (fa @ fb) * scale_a.float().reshape(m, 1) * scale_b.float().reshape(1, n)
    else:
        # Block scales factor per element of the operands (A's depends on (m, k // 128), B's
        # on (k // 128, n or n // 128)), so scaling the operands before the product equals
        # scaling each 128-deep partial product, which is what the kernels do.
        a_rows = 128 if recipe == "block_128x128_1x128" else 1
        b_cols = 128 if recipe == "block_1x128_128x128" else 1
        fa = fa * _expand(scale_a, m, k, a_rows, 128)
        fb = fb * _expand(scale_b, k, n, 128, b_cols)
        acc = fa @ fb
    if bias is not None:
        acc = acc + bias.to(torch.float32).reshape(1, n)
    if scale_result is not None and out_dtype in _FLOAT8:
        acc = acc * scale_result.float().reshape(())
    return acc.to(out_dtype)


def tma_aligned(*tensors) -> bool:
    """Whether every tensor's data pointer is 16-byte aligned (what a TMA descriptor needs).
    Meta / fake tensors (routing without storage, tests) count as aligned: they have no
    pointer to be misaligned."""
    for t in tensors:
        try:
            if t.data_ptr() % 16:
                return False
        except RuntimeError:
            pass
    return True
