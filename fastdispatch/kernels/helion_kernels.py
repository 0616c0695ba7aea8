"""Helion benchmark and test kernels (issue 15): the n-input add for n in 2, 8, 16 and an rms_norm.

Each has one fixed ``helion.Config`` (no autotuning), so Helion's own call and
``fastdispatch.helion_kernel`` run the same generated code. ``add{n}`` writes a given ``out``
(compared with the plain fastdispatch Triton kernel of ``kernels/add.py``, which also takes
``out``; poisoned outputs are meaningful); ``add{n}_alloc`` allocates its output in the host
function, which measures what that allocation costs. ``rms_norm`` is the reduction kernel
(after Helion's ``examples/rms_norm.py``, written here): a row reduction in fp32, one
output allocation.

Importing this module needs Helion (``pip install -e ".[helion]"``).
"""
from __future__ import annotations

import torch
import helion
import helion.language as hl

#: One 1-D tile of 1024 elements: 4096-element adds run 4 programs, as ``kernels/add.py``.
ADD_CONFIG = helion.Config(block_sizes=[1024], num_warps=4, num_stages=1)
#: One row per program, the whole row in one reduction block.
RMS_NORM_CONFIG = helion.Config(block_sizes=[1], reduction_loops=[None], num_warps=4, num_stages=1)


@helion.kernel(config=ADD_CONFIG, static_shapes=True)
def add2(t0: torch.Tensor, t1: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = t0 + t1 (elementwise; returns out)."""
    for tile in hl.tile(out.size(0)):
        out[tile] = t0[tile] + t1[tile]
    return out


@helion.kernel(config=ADD_CONFIG, static_shapes=True)
def add8(
        t0: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, t3: torch.Tensor, t4: torch.Tensor,
        t5: torch.Tensor, t6: torch.Tensor, t7: torch.Tensor,
        out: torch.Tensor) -> torch.Tensor:
    """out = t0 + ... + t7 (elementwise; returns out)."""
    for tile in hl.tile(out.size(0)):
        out[tile] = (t0[tile] + t1[tile] + t2[tile] + t3[tile] + t4[tile] + t5[tile]
                     + t6[tile] + t7[tile])
    return out


@helion.kernel(config=ADD_CONFIG, static_shapes=True)
def add16(
        t0: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, t3: torch.Tensor, t4: torch.Tensor,
        t5: torch.Tensor, t6: torch.Tensor, t7: torch.Tensor, t8: torch.Tensor, t9: torch.Tensor,
        t10: torch.Tensor, t11: torch.Tensor, t12: torch.Tensor, t13: torch.Tensor,
        t14: torch.Tensor,
        t15: torch.Tensor,
        out: torch.Tensor) -> torch.Tensor:
    """out = t0 + ... + t15 (elementwise; returns out)."""
    for tile in hl.tile(out.size(0)):
        out[tile] = (t0[tile] + t1[tile] + t2[tile] + t3[tile] + t4[tile] + t5[tile]
                     + t6[tile] + t7[tile] + t8[tile] + t9[tile] + t10[tile] + t11[tile]
                     + t12[tile] + t13[tile] + t14[tile] + t15[tile])
    return out


@helion.kernel(config=ADD_CONFIG, static_shapes=True)
def add2_alloc(t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """t0 + t1 into a new tensor (the host function allocates it)."""
    out = torch.empty_like(t0)
    for tile in hl.tile(out.size(0)):
        out[tile] = t0[tile] + t1[tile]
    return out


@helion.kernel(config=ADD_CONFIG, static_shapes=True)
def add8_alloc(
        t0: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, t3: torch.Tensor, t4: torch.Tensor,
        t5: torch.Tensor, t6: torch.Tensor, t7: torch.Tensor,
) -> torch.Tensor:
    """t0 + ... + t7 into a new tensor (the host function allocates it)."""
    out = torch.empty_like(t0)
    for tile in hl.tile(out.size(0)):
        out[tile] = (t0[tile] + t1[tile] + t2[tile] + t3[tile] + t4[tile] + t5[tile]
                     + t6[tile] + t7[tile])
    return out


@helion.kernel(config=ADD_CONFIG, static_shapes=True)
def add16_alloc(
        t0: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, t3: torch.Tensor, t4: torch.Tensor,
        t5: torch.Tensor, t6: torch.Tensor, t7: torch.Tensor, t8: torch.Tensor, t9: torch.Tensor,
        t10: torch.Tensor, t11: torch.Tensor, t12: torch.Tensor, t13: torch.Tensor,
        t14: torch.Tensor,
        t15: torch.Tensor,
) -> torch.Tensor:
    """t0 + ... + t15 into a new tensor (the host function allocates it)."""
    out = torch.empty_like(t0)
    for tile in hl.tile(out.size(0)):
        out[tile] = (t0[tile] + t1[tile] + t2[tile] + t3[tile] + t4[tile] + t5[tile]
                     + t6[tile] + t7[tile] + t8[tile] + t9[tile] + t10[tile] + t11[tile]
                     + t12[tile] + t13[tile] + t14[tile] + t15[tile])
    return out


@helion.kernel(config=RMS_NORM_CONFIG, static_shapes=True)
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``x / sqrt(mean(x**2, -1) + eps) * weight`` per row of a 2-D ``x``, in fp32, cast back."""
    m, n = x.size()
    assert weight.size(0) == n, f"weight has {weight.size(0)} elements for rows of {n}"
    out = torch.empty_like(x)
    for tile_m in hl.tile(m):
        row = x[tile_m, :].to(torch.float32)
        # 1 / sqrt, not torch.rsqrt: Triton's interpreter (the CPU tests) has no libdevice.rsqrt.
        inv_rms = 1.0 / torch.sqrt(torch.mean(row * row, dim=-1) + eps)
        out[tile_m, :] = (row * inv_rms[:, None] * weight[:].to(torch.float32)).to(out.dtype)
    return out


#: n -> the add kernel writing a given ``out`` (arguments: n inputs, then out).
ADD_KERNELS = {2: add2, 8: add8, 16: add16}
#: n -> the add kernel allocating its output (arguments: n inputs).
ADD_ALLOC_KERNELS = {2: add2_alloc, 8: add8_alloc, 16: add16_alloc}


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The same computation in torch (fp32), for tests."""
    row = x.to(torch.float32)
    return (row / torch.sqrt(row.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)
