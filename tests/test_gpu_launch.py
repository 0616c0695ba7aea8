"""GPU launches through ``triton_kernel`` (all marked ``gpu``; skipped without CUDA): numerics
of the direct launch vs torch, the guards that need a device (alignment, launch hooks, changed
globals, the fast-path switch, streams, graph capture, threads, a second device)."""

import pytest
import torch
import triton
import triton.knobs as triton_knobs
import triton.language as tl

import fastdispatch
from fastdispatch import keys
from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid
from fastdispatch.knobs import scope

pytestmark = pytest.mark.gpu


def add_kernel(n):
    return fastdispatch.triton_kernel(ADD_KERNELS[n], grid=add_grid, constexprs={"BLOCK": BLOCK})


def inputs(n, numel=4096 + 77, device="cuda", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(numel, device=device, generator=g) for _ in range(n)]


def reference(xs):
    ref = xs[0].clone()
    for x in xs[1:]:
        ref += x
    return ref


def poisoned(like):
    return torch.full_like(like, float("nan"))


@pytest.mark.parametrize("n", [2, 8, 16])
def test_add_matches_torch_direct_launch(n):
    """add{n} through triton_kernel equals torch on random data, and the entry is a direct launch."""
    k = add_kernel(n)
    for seed in range(3):                                   # a miss, then hits
        xs = inputs(n, seed=seed)
        out = poisoned(xs[0])
        k(*xs, out, out.numel())
        torch.cuda.synchronize()
        torch.testing.assert_close(out, reference(xs), rtol=1e-6, atol=1e-6)
    (entry,) = k.published()
    assert entry.mode == keys.MODE_DRIVER, entry.info
    assert entry.hits == 2


def test_unaligned_view_gets_its_own_entry():
    """x[1:] (not 16-byte aligned) gets a different entry and still the right result."""
    k = add_kernel(2)
    a, b = inputs(2, numel=8193)
    out = poisoned(a)
    k(a[:-1], b[:-1], out[:-1], 8192)
    k(a[1:], b[1:], out[1:], 8192)
    torch.cuda.synchronize()
    assert k.num_entries == 2
    torch.testing.assert_close(out[1:], a[1:] + b[1:], rtol=1e-6, atol=1e-6)
    keys_text = {e.info["key"] for e in k.published()}
    assert len(keys_text) == 2


def test_launch_enter_hook_added_after_priming_fires():
    """A launch enter hook added after the entry is primed still sees the launch."""
    k = add_kernel(2)
    xs = inputs(2)
    out = poisoned(xs[0])
    k(*xs, out, out.numel())                                # primed, direct launch
    assert k.published()[0].mode == keys.MODE_DRIVER
    seen = []

    def hook(metadata):
        seen.append(metadata)

    triton_knobs.runtime.launch_enter_hook.add(hook)
    try:
        out2 = poisoned(xs[0])
        k(*xs, out2, out2.numel())
    finally:
        triton_knobs.runtime.launch_enter_hook.remove(hook)
    torch.cuda.synchronize()
    assert len(seen) == 1
    torch.testing.assert_close(out2, xs[0] + xs[1], rtol=1e-6, atol=1e-6)
    k(*xs, out2, out2.numel())                              # hook gone: no more calls
    assert len(seen) == 1


FACTOR = tl.constexpr(2.0)


@triton.jit
def _scale_by_global(x, out, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out + offs, tl.load(x + offs, mask=mask) * FACTOR, mask=mask)


def test_changed_global_raises_tritons_error():
    """A global constexpr changed after the first call: Triton's "has changed" RuntimeError."""
    global FACTOR
    k = fastdispatch.triton_kernel(_scale_by_global, grid=lambda x, out, n: (triton.cdiv(n, 256),),
                                   constexprs={"BLOCK": 256})
    x = inputs(1)[0]
    out = poisoned(x)
    k(x, out, x.numel())
    torch.cuda.synchronize()
    torch.testing.assert_close(out, x * 2.0)
    saved = FACTOR
    try:
        FACTOR = tl.constexpr(3.0)
        with pytest.raises(RuntimeError, match="has changed since we compiled"):
            k(x, out, x.numel())
    finally:
        FACTOR = saved


def test_disable_fast_path_gives_correct_slow_entry():
    """knobs.scope(disable_fast_path=True) + clear_entries(): a slow entry, still correct."""
    k = add_kernel(8)
    xs = inputs(8)
    with scope(disable_fast_path=True):
        k.clear_entries()
        out = poisoned(xs[0])
        k(*xs, out, out.numel())
        k(*xs, out, out.numel())
    torch.cuda.synchronize()
    (entry,) = k.published()
    assert entry.mode == keys.MODE_SLOW and entry.info["fallback"] == "FASTDISPATCH_DISABLE_FAST_PATH=1"
    torch.testing.assert_close(out, reference(xs), rtol=1e-6, atol=1e-6)


def test_launch_goes_to_the_current_stream():
    """Under torch.cuda.stream(s) the launch is ordered on s (an event after it sees the result)."""
    k = add_kernel(2)
    numel = 1 << 22
    xs = inputs(2, numel=numel)
    out = poisoned(xs[0])
    k(*xs, out, numel)                                       # prime on the default stream
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    out2 = poisoned(xs[0])
    torch.cuda.synchronize()
    with torch.cuda.stream(s):
        torch.cuda._sleep(100_000_000)                       # keep s busy: a launch on it waits
        k(*xs, out2, numel)
    # On the default stream, which does not wait for s: had the kernel been launched here, the
    # copy would see its result; launched on s, it still sees the NaN poison.
    snapshot = out2.clone()
    torch.cuda.synchronize()
    assert torch.isnan(snapshot).all()
    torch.testing.assert_close(out2, xs[0] + xs[1], rtol=1e-6, atol=1e-6)


def test_cuda_graph_capture_replays():
    """10 calls captured in a CUDA graph (after a warm-up) replay correctly on new data."""
    k = add_kernel(2)
    a, b = inputs(2)
    outs = [poisoned(a) for _ in range(10)]
    k(a, b, outs[0], a.numel())                              # warm up: the entry exists
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        with torch.cuda.graph(graph, stream=s):
            for i in range(10):
                k(a, b, outs[i], a.numel())
    for out in outs:
        out.fill_(float("nan"))
    a.copy_(torch.randn_like(a))
    b.copy_(torch.randn_like(b))
    graph.replay()
    torch.cuda.synchronize()
    eager = poisoned(a)
    k(a, b, eager, a.numel())                                # the same kernel, not captured
    torch.cuda.synchronize()
    for out in outs:
        torch.testing.assert_close(out, a + b, rtol=1e-6, atol=1e-6)
        assert torch.equal(out, eager), "graph replay is not bit-exact with the eager launch"


def test_32_threads_share_one_kernel(run_threads):
    """32 threads calling one kernel with their own outputs: every result right."""
    k = add_kernel(2)
    n_threads = 32
    xs = [inputs(2, seed=i) for i in range(n_threads)]
    outs = [poisoned(x[0]) for x in xs]

    def calls(i):
        for _ in range(20):
            k(xs[i][0], xs[i][1], outs[i], outs[i].numel())

    errors = run_threads(n_threads, calls)
    torch.cuda.synchronize()
    assert errors == []
    assert k.num_entries == 1
    for i in range(n_threads):
        torch.testing.assert_close(outs[i], xs[i][0] + xs[i][1], rtol=1e-6, atol=1e-6)


def test_cpu_tensor_rejected_on_a_gpu_machine():
    """A CPU tensor among CUDA ones: ValueError naming it, nothing published."""
    k = add_kernel(2)
    a, b = inputs(2)
    with pytest.raises(ValueError, match="argument 'out' is on cpu"):
        k(a, b, torch.empty(a.numel()), a.numel())
    assert k.num_entries == 0


@pytest.mark.multi_gpu
def test_tensors_on_device_1_launch_there():
    """Tensors on cuda:1 (current device 0) launch on device 1 with the right result."""
    k = add_kernel(2)
    a, b = inputs(2, device="cuda:1")
    out = poisoned(a)
    with torch.cuda.device(0):
        k(a, b, out, a.numel())
    torch.cuda.synchronize(1)
    torch.testing.assert_close(out, a + b, rtol=1e-6, atol=1e-6)
    assert k.published()[0].info["device"] == 1
