"""Test kernels shaped like real ones (the Triton tutorials, LLM kernel libraries): an autotuned
matmul with a META grid and ``prune_configs_by``, heuristics over autotune with
``do_not_specialize``, a softmax whose ``num_warps`` is chosen per call, a kernel with an omitted
constexpr default called by keyword, a config ``pre_hook`` and ``reset_to_zero`` over an
accumulating (atomic) kernel, host and in-kernel tensor descriptors.

Each ``case_*`` function runs one kernel twice, through Triton's own ``kernel[grid]`` and through
``fastdispatch.triton_kernel(kernel)[grid]`` (the one-line change), on poisoned outputs and random
inputs, and returns both outputs. Imported by the interpreter test (``TRITON_INTERPRET=1``, CPU)
and by the GPU test. ``do_bench`` is replaceable so autotuning works in the interpreter.
"""
import os
import time

import torch
import triton
import triton.language as tl

import fastdispatch

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def _cpu_bench(fn, quantiles=None, **_):
    """Autotuner do_bench for the interpreter: one timed run (the GPU default needs CUDA)."""
    start = time.perf_counter()
    fn()
    t = (time.perf_counter() - start) * 1e3
    return [t, t, t] if quantiles else t


BENCH = None if DEVICE == "cuda" else _cpu_bench


def poisoned(*shape, dtype=torch.float32):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


# -- 1. autotuned matmul, META grid over closure ints, prune_configs_by -------------------------
def _prune(configs, named_args, **kwargs):
    # keep configs whose K tile fits K (the tutorials' early_config_prune shape)
    return [c for c in configs if c.kwargs["BLOCK_K"] <= max(16, named_args["K"])]


MATMUL_CONFIGS = [
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1, num_stages=1),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=2, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4, num_stages=2),
]


@triton.autotune(configs=MATMUL_CONFIGS, key=["M", "N", "K"], prune_configs_by={"early_config_prune": _prune},
                 do_bench=BENCH)
@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                  stride_cm, stride_cn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr = 4):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_in_group = GROUP_M * num_pid_n
    group = pid // num_in_group
    first_m = group * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)   # builtin min: Triton 3.6's interpreter refuses
    pid_m = first_m + ((pid % num_in_group) % group_m)
    pid_n = (pid % num_in_group) // group_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        kk = k * BLOCK_K + offs_k
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + kk[None, :] * stride_ak,
                    mask=(offs_m[:, None] < M) & (kk[None, :] < K), other=0.0)
        b = tl.load(b_ptr + kk[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                    mask=(kk[:, None] < K) & (offs_n[None, :] < N), other=0.0)
        acc += tl.dot(a, b, input_precision="ieee")
    c = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c, acc, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def matmul(kernel, a, b):
    M, K = a.shape
    _, N = b.shape
    c = poisoned(M, N)
    grid = lambda META: (triton.cdiv(M, META["BLOCK_M"]) * triton.cdiv(N, META["BLOCK_N"]),)  # noqa: E731
    kernel[grid](a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                 c.stride(0), c.stride(1))
    return c


def case_matmul(shape=(48, 40, 24)):
    M, N, K = shape
    a = torch.randn(M, K, device=DEVICE)
    b = torch.randn(K, N, device=DEVICE)
    fast = fastdispatch.triton_kernel(matmul_kernel)
    return matmul(matmul_kernel, a, b), matmul(fast, a, b), a @ b


# -- 2. heuristics over autotune, do_not_specialize ----------------------------------------------
@triton.heuristics({"EVEN_N": lambda args: args["n"] % 128 == 0})
@triton.autotune(configs=[triton.Config({"BLOCK": 64}, num_warps=2), triton.Config({"BLOCK": 128}, num_warps=4)],
                 key=["n"], do_bench=BENCH)
@triton.jit(do_not_specialize=["n"])
def scale_kernel(x_ptr, out_ptr, n, alpha, BLOCK: tl.constexpr, EVEN_N: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if EVEN_N:
        tl.store(out_ptr + offs, tl.load(x_ptr + offs) * alpha)
    else:
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * alpha, mask=mask)


def scale(kernel, x, alpha):
    n = x.numel()
    out = poisoned(n)
    kernel[lambda META: (triton.cdiv(n, META["BLOCK"]),)](x, out, n, alpha)
    return out


def case_scale(n=1000):
    x = torch.randn(n, device=DEVICE)
    fast = fastdispatch.triton_kernel(scale_kernel)
    return scale(scale_kernel, x, 1.5), scale(fast, x, 1.5), x * 1.5


# -- 3. softmax, num_warps per call ---------------------------------------------------------------
@triton.jit
def softmax_kernel(out_ptr, in_ptr, out_row_stride, in_row_stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(in_ptr + row * in_row_stride + cols, mask=cols < n_cols, other=-float("inf"))
    x = x - tl.max(x, axis=0)
    num = tl.exp(x)
    tl.store(out_ptr + row * out_row_stride + cols, num / tl.sum(num, axis=0), mask=cols < n_cols)


def softmax(kernel, x):
    rows, cols = x.shape
    out = poisoned(rows, cols)
    block = triton.next_power_of_2(cols)
    kernel[(rows,)](out, x, out.stride(0), x.stride(0), cols, BLOCK=block,
                    num_warps=4 if block < 2048 else 8)
    return out


def case_softmax(shape=(7, 100)):
    x = torch.randn(*shape, device=DEVICE)
    fast = fastdispatch.triton_kernel(softmax_kernel)
    return softmax(softmax_kernel, x), softmax(fast, x), torch.softmax(x, dim=1)


# -- 4. omitted constexpr default, keyword call ---------------------------------------------------
@triton.jit
def axpy_kernel(x_ptr, y_ptr, out_ptr, a, n, BLOCK: tl.constexpr = 256):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, a * tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


def axpy(kernel, x, y, a):
    n = x.numel()
    out = poisoned(n)
    kernel[lambda META: (triton.cdiv(n, META["BLOCK"]),)](x_ptr=x, y_ptr=y, out_ptr=out, a=a, n=n)
    return out


def case_axpy(n=777):
    x = torch.randn(n, device=DEVICE)
    y = torch.randn(n, device=DEVICE)
    fast = fastdispatch.triton_kernel(axpy_kernel)
    return axpy(axpy_kernel, x, y, 0.5), axpy(fast, x, y, 0.5), 0.5 * x + y


# -- 5. config pre_hook and reset_to_zero over an accumulating kernel ----------------------------
@triton.jit
def row_sum_kernel(x_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
    # Split-K style: each program adds its chunk of a row into out with an atomic.
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    cols = chunk * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * n_cols + cols, mask=cols < n_cols, other=0.0)
    tl.atomic_add(out_ptr + row, tl.sum(x, axis=0))


def _zero_out(nargs):
    nargs["out_ptr"].zero_()


row_sum_pre_hook = triton.autotune(
    configs=[triton.Config({"BLOCK": 32}, pre_hook=_zero_out), triton.Config({"BLOCK": 64}, pre_hook=_zero_out)],
    key=["n_cols"], do_bench=BENCH)(row_sum_kernel)
row_sum_reset = triton.autotune(
    configs=[triton.Config({"BLOCK": 32}), triton.Config({"BLOCK": 64})],
    key=["n_cols"], reset_to_zero=["out_ptr"], do_bench=BENCH)(row_sum_kernel)


def row_sum(kernel, x, zero_first):
    rows, cols = x.shape
    out = poisoned(rows)
    if zero_first:
        out.zero_()
    kernel[lambda META: (rows, triton.cdiv(cols, META["BLOCK"]))](x, out, cols)
    return out


def case_row_sum_pre_hook(shape=(5, 200)):
    x = torch.randn(*shape, device=DEVICE)
    fast = fastdispatch.triton_kernel(row_sum_pre_hook)
    # the pre_hook zeroes out on every call, poisoned or not
    return row_sum(row_sum_pre_hook, x, False), row_sum(fast, x, False), x.sum(1)


def case_row_sum_reset(shape=(5, 200)):
    x = torch.randn(*shape, device=DEVICE)
    fast = fastdispatch.triton_kernel(row_sum_reset)
    # reset_to_zero only runs while tuning (Triton's semantics): the caller zeroes out
    return row_sum(row_sum_reset, x, True), row_sum(fast, x, True), x.sum(1)


CASES = {"matmul": case_matmul, "scale": case_scale, "softmax": case_softmax, "axpy": case_axpy,
         "row_sum_pre_hook": case_row_sum_pre_hook, "row_sum_reset": case_row_sum_reset}
