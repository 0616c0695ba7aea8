"""Drop-in Triton on the GPU: real-world kernel shapes (tests/real_kernels.py) through the one-line
change, against Triton's own launch of the same kernel object (poisoned outputs, random data),
new shapes as hits, keyword calls on the hot path, CUDA graph capture after warm-up, tensor
descriptors (host and in-kernel), torch.compile with no input copies, threads on own streams.

Tolerances (fp32 data): bit-identical to Triton's own launch (same binary, same config); against
torch, 1e-5 relative for elementwise/softmax, 1e-4 for the fp32 ("ieee") matmul."""
import threading

import pytest
import torch
import triton
import triton.language as tl

import fastdispatch
import real_kernels as rk

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", sorted(rk.CASES))
def test_real_kernel_matches_triton(name):
    """Each real-kernel shape: bit-identical to Triton's launch, close to torch, every element written."""
    ref, got, exact = rk.CASES[name]()
    torch.cuda.synchronize()
    assert not torch.isnan(got).any()
    if name.startswith("row_sum"):   # float atomics: the order of the adds differs run to run
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, ref)
    tol = 1e-4 if name == "matmul" else 1e-5
    torch.testing.assert_close(got, exact, rtol=tol, atol=tol)


def test_new_shapes_are_hits(stats_delta):
    """After the first call, new sizes of the same dtype/alignment/int class never miss."""
    fast = fastdispatch.triton_kernel(rk.axpy_kernel)
    x = torch.randn(1 << 16, device="cuda")
    rk.axpy(fast, x[:1024], x[:1024], 2.0)
    stats_delta.reset()
    for n in (2048, 4096, 777 * 16, 1 << 16):
        out = rk.axpy(fast, x[:n], x[:n], 2.0)
        torch.testing.assert_close(out, 2.0 * x[:n] + x[:n])
    assert stats_delta("misses") == 0 and fast.num_entries == 1


def test_keyword_call_is_a_hit():
    """A keyword call (every argument by name, default omitted) finds the positional call's entry."""
    fast = fastdispatch.triton_kernel(rk.axpy_kernel)
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    out = rk.poisoned(4096)
    grid = (triton.cdiv(4096, 256),)
    fast[grid](x, y, out, 0.5, 4096)
    entry = fast.published()[0]
    hits = entry.hits
    out.fill_(float("nan"))
    fast[grid](x_ptr=x, y_ptr=y, out_ptr=out, a=0.5, n=4096)
    torch.cuda.synchronize()
    assert fast.num_entries == 1 and entry.hits == hits + 1
    torch.testing.assert_close(out, 0.5 * x + y)


def test_autotuned_hit_reuses_the_decision(stats_delta):
    """A second autotune key tunes once; later calls with either key tune nothing."""
    fast = fastdispatch.triton_kernel(rk.matmul_kernel)
    a, b = torch.randn(64, 32, device="cuda"), torch.randn(32, 48, device="cuda")
    rk.matmul(fast, a, b)
    stats_delta.reset()
    for _ in range(3):
        c = rk.matmul(fast, a, b)
    assert stats_delta("tunes") == 0 and stats_delta("misses") == 0
    torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)


def test_graph_capture_after_warmup_replays_exactly():
    """Warm up, capture 3 launches in a CUDA graph, replay: same bits as eager."""
    fast = fastdispatch.triton_kernel(rk.softmax_kernel)
    x = torch.randn(64, 300, device="cuda")
    out = rk.softmax(fast, x)   # warm-up (the miss)
    expected = out.clone()
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        block = triton.next_power_of_2(300)
        fast[(64,)](out, x, out.stride(0), x.stride(0), 300, BLOCK=block, num_warps=4)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        fast[(64,)](out, x, out.stride(0), x.stride(0), 300, BLOCK=block, num_warps=4)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected)


@triton.jit
def _copy_desc(in_desc, out_desc, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    m = tl.program_id(0) * BLOCK_M
    n = tl.program_id(1) * BLOCK_N
    out_desc.store([m, n], in_desc.load([m, n]) * 2.0)


@pytest.mark.sm90
def test_host_tensor_descriptor():
    """Host TensorDescriptor arguments: correct through Triton's launcher (the entry says why)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    x = torch.randn(128, 64, device="cuda")
    out = torch.full_like(x, float("nan"))
    fast = fastdispatch.triton_kernel(_copy_desc)
    a = TensorDescriptor.from_tensor(x, [32, 32])
    b = TensorDescriptor.from_tensor(out, [32, 32])
    fast[(4, 2)](a, b, BLOCK_M=32, BLOCK_N=32)
    torch.cuda.synchronize()
    torch.testing.assert_close(out, 2 * x)
    out.fill_(float("nan"))
    fast[(4, 2)](TensorDescriptor.from_tensor(x, [32, 32]), TensorDescriptor.from_tensor(out, [32, 32]),
                 BLOCK_M=32, BLOCK_N=32)
    torch.cuda.synchronize()
    torch.testing.assert_close(out, 2 * x)


@triton.jit
def _device_desc(x_ptr, out_ptr, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    src = tl.make_tensor_descriptor(x_ptr, shape=[M, N], strides=[N, 1], block_shape=[BLOCK_M, BLOCK_N])
    dst = tl.make_tensor_descriptor(out_ptr, shape=[M, N], strides=[N, 1], block_shape=[BLOCK_M, BLOCK_N])
    m = tl.program_id(0) * BLOCK_M
    n = tl.program_id(1) * BLOCK_N
    dst.store([m, n], src.load([m, n]) + 1.0)


@pytest.mark.sm90
def test_in_kernel_tensor_descriptor_gets_scratch():
    """tl.make_tensor_descriptor needs global scratch: allocated through triton.set_allocator."""
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    x = torch.randn(128, 64, device="cuda")
    out = torch.full_like(x, float("nan"))
    fast = fastdispatch.triton_kernel(_device_desc)
    fast[(4, 2)](x, out, 128, 64, BLOCK_M=32, BLOCK_N=32)
    torch.cuda.synchronize()
    torch.testing.assert_close(out, x + 1.0)


def test_torch_compile_fullgraph_no_input_copies():
    """torch.compile(fullgraph=True) of a function calling the wrapped kernel: correct, and the
    generated code copies none of the kernel's inputs (Dynamo sees the Triton kernel itself)."""
    from torch._inductor.utils import run_and_get_code

    fast = fastdispatch.triton_kernel(rk.axpy_kernel)

    def f(x, y, out):
        n = x.numel()
        fast[lambda META: (triton.cdiv(n, META["BLOCK"]),)](x, y, out, 2.0, n)
        return out

    compiled = torch.compile(f, fullgraph=True)
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    out = torch.full_like(x, float("nan"))
    result, codes = run_and_get_code(compiled, x, y, out)
    torch.testing.assert_close(result, 2.0 * x + y)
    code = "\n".join(codes)
    assert "axpy_kernel" in code
    assert ".clone(" not in code and "copy_(" not in code, code[-3000:]


def _no_python_binding(monkeypatch):
    """Make the Python binder fail, so a trace that binds in Python (the slow form) raises."""
    from fastdispatch.dispatcher import Dispatcher

    def refuse(self, args, kwargs):
        raise AssertionError("the traced call bound its arguments in Python")
    monkeypatch.setattr(Dispatcher, "bind", refuse)


@pytest.mark.parametrize("form", ["getitem_meta", "getitem_tuple_fixed", "call_args_grid", "call_static_grid",
                                  "autotuned", "general_methods"])
def test_torch_compile_direct_forms(form, monkeypatch):
    """The traced call reads only the kernel object (no Python binding, so few guards): every
    form Triton users write, correct against torch under torch.compile(fullgraph=True), with no
    input copies in the generated code; the binder is made to fail, so a slow trace fails here."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    x, y = torch.randn(5000, device="cuda"), torch.randn(5000, device="cuda")
    out = torch.full_like(x, float("nan"))
    if form == "getitem_meta":
        fast = fastdispatch.triton_kernel(rk.axpy_kernel)

        def f(x, y, out):
            fast[lambda META: (triton.cdiv(x.numel(), META["BLOCK"]),)](x, y, out, 2.0, x.numel(), BLOCK=512)
            return out
    elif form == "getitem_tuple_fixed":
        fast = fastdispatch.triton_kernel(rk.axpy_kernel, constexprs={"BLOCK": 128})

        def f(x, y, out):
            fast[(triton.cdiv(x.numel(), 128),)](x, y, out, 2.0, x.numel())
            return out
    elif form == "call_args_grid":
        # a grid of every call argument (BLOCK's default included), the call omitting BLOCK
        fast = fastdispatch.triton_kernel(rk.axpy_kernel, grid=lambda x, y, out, a, n, BLOCK: (triton.cdiv(n, BLOCK),))

        def f(x, y, out):
            fast(x, y, out, 2.0, x.numel())
            return out
    elif form == "call_static_grid":
        fast = fastdispatch.triton_kernel(rk.axpy_kernel, grid=(triton.cdiv(5000, 64),), constexprs={"BLOCK": 64})

        def f(x, y, out):
            fast(x, y, out, 2.0, x.numel(), num_warps=2)
            return out
    elif form == "general_methods":
        # a subclass keeps OffHotPath's general traced methods (no per-kernel class): the
        # path kernels with non-literal constants take
        from fastdispatch.backends.triton.kernel import TritonKernel

        class Subclass(TritonKernel):
            pass
        fast = Subclass(rk.axpy_kernel, constexprs={"BLOCK": 128})
        assert type(fast) is Subclass

        def f(x, y, out):
            fast[(triton.cdiv(x.numel(), 128),)](x, y, out, 2.0, x.numel())
            return out
    else:   # autotune over the kernel: BLOCK comes from the configs, the grid from META
        tuned = triton.autotune(configs=[triton.Config({"BLOCK": b}) for b in (128, 512)], key=["n"])(rk.axpy_kernel)
        fast = fastdispatch.triton_kernel(tuned)

        def f(x, y, out):
            fast[lambda META: (triton.cdiv(x.numel(), META["BLOCK"]),)](x, y, out, 2.0, x.numel())
            return out
    _no_python_binding(monkeypatch)
    result, codes = run_and_get_code(torch.compile(f, fullgraph=True), x, y, out)
    torch.testing.assert_close(result, 2.0 * x + y)
    code = "\n".join(codes)
    assert "axpy_kernel" in code and ".clone(" not in code and "copy_(" not in code, code[-3000:]


def _guard_lines(compiled) -> list:
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list, innermost_fn
    entries = _debug_get_cache_entry_list(innermost_fn(compiled).__code__)
    assert len(entries) == 1
    return str(entries[0].guard_manager).splitlines()


def test_torch_compile_guards_read_only_the_kernel_object():
    """Under torch.compile the wrapper costs the guards of its own object and Triton's kernel
    object, nothing else: no ``_traced`` tuple, no ``_is_compiling``, no instance ``__dict__``
    (the per-kernel traced class, ``traced.py``); a fixed constexpr adds no guard either (it is a
    literal in the generated code). Each compiled call checks every guard line."""
    torch._dynamo.reset()
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    out = torch.full_like(x, float("nan"))
    plain = fastdispatch.triton_kernel(rk.axpy_kernel)
    fixed = fastdispatch.triton_kernel(rk.axpy_kernel, constexprs={"BLOCK": 1024})

    def native(x, y, out):
        rk.axpy_kernel[(4,)](x, y, out, 2.0, x.numel(), BLOCK=1024)
        return out

    def ours(x, y, out):
        plain[(4,)](x, y, out, 2.0, x.numel(), BLOCK=1024)
        return out

    def ours_fixed(x, y, out):
        fixed[(4,)](x, y, out, 2.0, x.numel())
        return out
    lines = {}
    for fn in (native, ours, ours_fixed):
        compiled = torch.compile(fn, fullgraph=True)
        out.fill_(float("nan"))
        torch.testing.assert_close(compiled(x, y, out), 2.0 * x + y)
        lines[fn.__name__] = _guard_lines(compiled)
    for name in ("ours", "ours_fixed"):
        text = "\n".join(lines[name])
        assert "_traced" not in text and "_is_compiling" not in text and "__dict__" not in text, text
        # the wrapper's TYPE_MATCH and its ``kernel`` slot's accessor, beside the native global
        assert len(lines[name]) <= len(lines["native"]) + 3, (len(lines[name]), len(lines["native"]), text)


@pytest.mark.parametrize("form", ["getitem", "autotuned"])
def test_torch_compile_reduce_overhead(form):
    """torch.compile(mode="reduce-overhead") of a function allocating its output and calling the
    wrapped kernel: captured as a CUDA graph (no cudagraph skip), and every replay computes from
    the call's new inputs (random values, outputs poisoned by a NaN-filled previous result)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    kernel = rk.axpy_kernel if form == "getitem" else triton.autotune(
        configs=[triton.Config({"BLOCK": b}) for b in (128, 512)], key=["n"])(rk.axpy_kernel)
    fast = fastdispatch.triton_kernel(kernel)

    def f(x, y):
        out = torch.full_like(x, float("nan"))
        n = x.numel()
        fast[lambda META: (triton.cdiv(n, META["BLOCK"]),)](x, y, out, 2.0, n)
        return out
    compiled = torch.compile(f, mode="reduce-overhead", fullgraph=True)
    for _ in range(4):   # warm-up, record, then replays
        x, y = torch.randn(5000, device="cuda"), torch.randn(5000, device="cuda")
        torch.testing.assert_close(compiled(x, y).clone(), 2.0 * x + y)
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])


def test_torch_compile_keyword_call_binds_in_python():
    """A wrap-time grid of the call's arguments with a keyword call still traces (bound in
    Python, the general form) and is correct."""
    torch._dynamo.reset()
    fast = fastdispatch.triton_kernel(rk.axpy_kernel, grid=lambda x, y, out, a, n, BLOCK: (triton.cdiv(n, BLOCK),))
    x, y = torch.randn(3000, device="cuda"), torch.randn(3000, device="cuda")
    out = torch.full_like(x, float("nan"))
    compiled = torch.compile(lambda x, y, out: fast(x, y, out, a=2.0, n=x.numel()) or out, fullgraph=True)
    torch.testing.assert_close(compiled(x, y, out), 2.0 * x + y)


def test_threads_on_own_streams():
    """8 threads, each on its own stream, share one wrapped kernel: every result correct."""
    fast = fastdispatch.triton_kernel(rk.axpy_kernel)
    x = torch.randn(8, 8192, device="cuda")
    outs = torch.full_like(x, float("nan"))
    rk.axpy(fast, x[0], x[0], 1.0)
    torch.cuda.synchronize()
    errors = []

    def worker(i):
        try:
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream):
                for _ in range(200):
                    fast[(triton.cdiv(8192, 256),)](x[i], x[i], outs[i], float(i), 8192)
            stream.synchronize()
        except Exception as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(8):
        torch.testing.assert_close(outs[i], float(i) * x[i] + x[i])
