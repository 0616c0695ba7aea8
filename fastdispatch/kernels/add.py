"""Benchmark kernels: ``out = t0 + ... + t{n-1}`` over fp32 vectors, for n in 2, 8, 16.

The launch-overhead benchmarks (DESIGN §1) compare launch paths on these kernels, where the
GPU work is negligible (4096 elements) so the time per call is the launch path's cost. Triton
has no variadic pointer arguments, so each arity is spelled out.
"""
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def add2(t0, t1, out, n, BLOCK: tl.constexpr):
    """out = t0 + t1 (elementwise, n elements)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.load(t0 + offs, mask=mask)
    acc += tl.load(t1 + offs, mask=mask)
    tl.store(out + offs, acc, mask=mask)


@triton.jit
def add8(t0, t1, t2, t3, t4, t5, t6, t7, out, n, BLOCK: tl.constexpr):
    """out = t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7 (elementwise, n elements)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.load(t0 + offs, mask=mask)
    acc += tl.load(t1 + offs, mask=mask)
    acc += tl.load(t2 + offs, mask=mask)
    acc += tl.load(t3 + offs, mask=mask)
    acc += tl.load(t4 + offs, mask=mask)
    acc += tl.load(t5 + offs, mask=mask)
    acc += tl.load(t6 + offs, mask=mask)
    acc += tl.load(t7 + offs, mask=mask)
    tl.store(out + offs, acc, mask=mask)


@triton.jit
def add16(t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15, out, n, BLOCK: tl.constexpr):
    """out = t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7 + t8 + t9 + t10 + t11 + t12 + t13 + t14 + t15 (elementwise, n elements)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.load(t0 + offs, mask=mask)
    acc += tl.load(t1 + offs, mask=mask)
    acc += tl.load(t2 + offs, mask=mask)
    acc += tl.load(t3 + offs, mask=mask)
    acc += tl.load(t4 + offs, mask=mask)
    acc += tl.load(t5 + offs, mask=mask)
    acc += tl.load(t6 + offs, mask=mask)
    acc += tl.load(t7 + offs, mask=mask)
    acc += tl.load(t8 + offs, mask=mask)
    acc += tl.load(t9 + offs, mask=mask)
    acc += tl.load(t10 + offs, mask=mask)
    acc += tl.load(t11 + offs, mask=mask)
    acc += tl.load(t12 + offs, mask=mask)
    acc += tl.load(t13 + offs, mask=mask)
    acc += tl.load(t14 + offs, mask=mask)
    acc += tl.load(t15 + offs, mask=mask)
    tl.store(out + offs, acc, mask=mask)


ADD_KERNELS = {2: add2, 8: add8, 16: add16}


def add_grid(*args):
    """Grid of the add kernels: one program per BLOCK elements (n is the last call argument; BLOCK is fixed at wrap time)."""
    return (triton.cdiv(args[-1], BLOCK),)


def precompile_specs():
    """(kernel, args) pairs for ``python -m fastdispatch precompile
    fastdispatch.kernels.add:precompile_specs``: each add kernel, aligned and unaligned."""
    import fastdispatch
    from fastdispatch.precompile import TensorSpec

    pairs = []
    for n, fn in ADD_KERNELS.items():
        kernel = fastdispatch.triton_kernel(fn, grid=add_grid, constexprs={"BLOCK": BLOCK})
        for aligned in (True, False):
            tensors = [TensorSpec("float32", (4096,), aligned) for _ in range(n + 1)]
            pairs.append((kernel, (*tensors, 4096)))
    return pairs
