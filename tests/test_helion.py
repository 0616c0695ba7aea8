"""fastdispatch.helion_kernel (issue 15).

CPU tier: Helion's Triton backend generates real host code, and Triton's interpreter runs the
kernels on CPU tensors. The interpreter must be on from the start of the process (Triton's
``tl.sum`` & co. are decorated at import), so :func:`test_cpu_tier_in_triton_interpreter` runs
this file's ``interpreted`` tests in a fresh ``TRITON_INTERPRET=1`` pytest process; they skip in
any other process. Their kernels are defined here, apart from ``kernels/helion_kernels.py``
(which the GPU tests compile for the GPU). GPU tests are marked ``gpu``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

helion = pytest.importorskip("helion")
import helion.language as hl  # noqa: E402

import fastdispatch  # noqa: E402
from fastdispatch import keys  # noqa: E402
from fastdispatch.backends import helion as fd_helion  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = helion.Config(block_sizes=[256], num_warps=4, num_stages=1)
CFG_OTHER = helion.Config(block_sizes=[128], num_warps=2, num_stages=1)


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 pytest "
                                 "process of test_cpu_tier_in_triton_interpreter")


@pytest.mark.skipif(INTERPRETED, reason="this is that process")
def test_cpu_tier_in_triton_interpreter(tmp_path):
    """This file's ``interpreted`` tests, in a fresh pytest process with TRITON_INTERPRET=1."""
    env = dict(os.environ, TRITON_INTERPRET="1", FASTDISPATCH_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", os.path.abspath(__file__), "-q",
                           "-m", "not gpu", "-p", "no:cacheprovider", "-W", "ignore"],
                          capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


def _make_add(**settings):
    settings.setdefault("config", CFG)
    settings.setdefault("static_shapes", True)

    @helion.kernel(**settings)
    def cpu_add(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        for tile in hl.tile(out.size(0)):
            out[tile] = x[tile] + y[tile]
        return out

    return cpu_add


def _poisoned(like):
    return torch.full_like(like, float("nan"))


def _add_args(n=1000, dtype=torch.float32):
    x, y = torch.randn(n).to(dtype), torch.randn(n).to(dtype)
    return x, y, _poisoned(x)


# -- wrapping -------------------------------------------------------------------------------------
@interpreted
def test_wrap_forms():
    k = _make_add()
    wrapped = fastdispatch.helion_kernel(k)
    assert isinstance(wrapped, fd_helion.HelionKernel) and wrapped.kernel is k
    assert wrapped.param_names == ("x", "y", "out")
    assert wrapped.roles == bytes([fd_helion.ROLE_TENSOR] * 3)

    @fastdispatch.helion_kernel(config=CFG, static_shapes=True)
    def deco(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for tile in hl.tile(out.size(0)):
            out[tile] = x[tile] * y[tile]
        return out

    assert isinstance(deco, fd_helion.HelionKernel) and isinstance(deco.kernel, helion.Kernel)
    x, y = torch.randn(300), torch.randn(300)
    assert torch.equal(deco(x, y), x * y) and torch.equal(deco(x, y), x * y)
    assert deco.num_entries == 1 and deco.entries()[0].hits == 1
    with pytest.raises(TypeError, match="already a @helion.kernel"):
        fastdispatch.helion_kernel(k, config=CFG)
    with pytest.raises(TypeError, match="expected a @helion.kernel"):
        fd_helion.HelionKernel(lambda x: x)


@interpreted
def test_hit_is_bit_identical_to_helions_call():
    k = _make_add()
    wrapped = fastdispatch.helion_kernel(k)
    x, y, out = _add_args()
    assert wrapped(x, y, out) is out                 # miss: Helion's own call
    expected = k(x, y, _poisoned(x))
    assert torch.equal(out, expected)
    out2 = _poisoned(x)
    assert wrapped(x, y, out2) is out2               # hit: the host function, our launcher
    assert torch.equal(out2, expected) and torch.equal(out2, x + y)
    (entry,) = wrapped.entries()
    assert entry.hits == 1 and entry.info["path"] == "fast"
    assert entry.info["config"] == CFG
    out3 = _poisoned(x)
    wrapped(x, y, out=out3)                          # keywords: bound once, then the hit
    assert torch.equal(out3, expected) and entry.hits == 2


@interpreted
def test_reduction_kernel_rms_norm():
    @helion.kernel(config=helion.Config(block_sizes=[2], reduction_loops=[None], num_warps=4,
                                        num_stages=1), static_shapes=True)
    def cpu_rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        m, n = x.size()
        out = torch.empty_like(x)
        for tile_m in hl.tile(m):
            row = x[tile_m, :].to(torch.float32)
            inv = 1.0 / torch.sqrt(torch.mean(row * row, dim=-1) + eps)
            out[tile_m, :] = (row * inv[:, None] * w[:].to(torch.float32)).to(out.dtype)
        return out

    wrapped = fastdispatch.helion_kernel(cpu_rms_norm)
    x, w = torch.randn(6, 64), torch.randn(64)
    first = wrapped(x, w)
    hit = wrapped(x, w)                              # the default eps filled by our bind
    hit2 = wrapped(x, w, 1e-5)
    expected = cpu_rms_norm(x, w)
    assert torch.equal(first, expected) and torch.equal(hit, expected) and torch.equal(hit2, expected)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(hit, ref, rtol=1e-5, atol=1e-5)
    (entry,) = wrapped.entries()
    assert entry.info["path"] == "fast" and entry.hits == 2
    # eps is a float: keyed by type, as Helion does; another value reuses the entry, correctly
    other = wrapped(x, w, 1e-2)
    assert torch.equal(other, cpu_rms_norm(x, w, 1e-2)) and wrapped.num_entries == 1


@interpreted
def test_bench_rms_norm_paths_check_and_run():
    """bench launch's reduction rows (the shipped rms_norm): built and checked (bit-identical to
    Helion's call, close to torch) before timing; each path runs."""
    from fastdispatch.bench_helion import FASTDISPATCH_RMS, HELION_RMS, rms_norm_paths

    paths = rms_norm_paths("cpu")
    assert set(paths) == {HELION_RMS, FASTDISPATCH_RMS}
    for fn in paths.values():
        fn(2)


# -- guards: what Helion re-binds on reaches Helion's bind -----------------------------------------
@interpreted
def test_new_dtype_and_shape_reach_helions_bind():
    k = _make_add()
    wrapped = fastdispatch.helion_kernel(k)
    for args in (_add_args(1000), _add_args(1000, torch.float64), _add_args(512),
                 _add_args(1000)):
        x, y, out = args
        wrapped(x, y, out)
        assert torch.equal(out, x + y)
    assert wrapped.num_entries == 3                  # f32/1000, f64/1000, f32/512
    assert len(k._bound_kernels) == 3                # each new key went through Helion's bind
    # a strided view is another key (exact strides), and Helion binds it too
    base = torch.randn(2000)
    x, y = base[::2], torch.randn(1000)
    out = _poisoned(y)
    wrapped(x, y, out)
    assert torch.equal(out, x + y) and wrapped.num_entries == 4


@interpreted
def test_scalar_specialize_runs_helions_call():
    @helion.kernel(config=CFG, static_shapes=True)
    def cpu_scale(x: torch.Tensor, n: int) -> torch.Tensor:
        m = hl.specialize(n)
        out = torch.empty_like(x)
        for tile in hl.tile(out.size(0)):
            out[tile] = x[tile] * m
        return out

    wrapped = fastdispatch.helion_kernel(cpu_scale)
    x = torch.randn(512)
    for n in (3, 5, 3, 7):                           # same int class: one key of ours
        assert torch.equal(wrapped(x, n), x * n)
    (entry,) = wrapped.entries()
    assert entry.info["path"] == "helion" and "hl.specialize" in entry.info["reason"]


@interpreted
def test_constexpr_scalar_is_keyed_by_value():
    @helion.kernel(config=CFG, static_shapes=True)
    def cpu_scale_c(x: torch.Tensor, n: hl.constexpr) -> torch.Tensor:
        out = torch.empty_like(x)
        for tile in hl.tile(out.size(0)):
            out[tile] = x[tile] * n
        return out

    wrapped = fastdispatch.helion_kernel(cpu_scale_c)
    assert wrapped.roles[1] == keys.ROLE_CONSTEXPR
    x = torch.randn(512)
    for n in (3, 5, 3, 5):
        assert torch.equal(wrapped(x, n), x * n)
    assert wrapped.num_entries == 2
    assert all(e.info["path"] == "fast" and e.hits == 1 for e in wrapped.entries())


@interpreted
def test_size_specialize_is_covered():
    @helion.kernel(config=CFG, static_shapes=False)
    def cpu_rowsum(x: torch.Tensor) -> torch.Tensor:
        m, n = x.size()
        n = hl.specialize(n)
        out = torch.empty([m], dtype=x.dtype, device=x.device)
        for tile in hl.tile(m):
            out[tile] = x[tile, :].sum(-1)
        return out

    wrapped = fastdispatch.helion_kernel(cpu_rowsum)
    for shape in ((8, 32), (8, 32), (16, 32), (8, 64), (8, 64)):
        x = torch.randn(shape)
        torch.testing.assert_close(wrapped(x), x.sum(-1), rtol=1e-5, atol=1e-5)
    assert wrapped.num_entries == 3
    assert all(e.info["path"] == "fast" for e in wrapped.entries())
    assert sum(e.hits for e in wrapped.entries()) == 2


@interpreted
def test_key_function_runs_helions_call():
    calls = []
    k = _make_add(key=lambda x, y, out: calls.append(1) or 0)
    wrapped = fastdispatch.helion_kernel(k)
    x, y, out = _add_args()
    wrapped(x, y, out)
    wrapped(x, y, out)
    assert torch.equal(out, x + y)
    (entry,) = wrapped.entries()
    assert entry.info["path"] == "helion" and "key=" in entry.info["reason"]
    assert len(calls) >= 2                           # Helion's key function ran on the hit too


@interpreted
def test_ref_mode_runs_helions_call(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    from helion.runtime.settings import RefMode
    k = _make_add(ref_mode=RefMode.EAGER)
    wrapped = fastdispatch.helion_kernel(k)
    x, y, out = _add_args()
    wrapped(x, y, out)
    wrapped(x, y, out)
    assert torch.equal(out, x + y)
    (entry,) = wrapped.entries()
    assert entry.info["path"] == "helion" and entry.hits == 1


@interpreted
def test_unkeyable_arguments_publish_nothing():
    k = _make_add()
    wrapped = fastdispatch.helion_kernel(k)

    class Sub(torch.Tensor):
        pass

    x, y, out = _add_args()
    wrapped(x.as_subclass(Sub), y, out)              # a tensor subclass: Helion's own call
    assert torch.equal(out, x + y) and wrapped.num_entries == 0


# -- guards: config changes and reset invalidate ---------------------------------------------------
@interpreted
def test_set_config_and_reset_invalidate():
    k = _make_add()
    wrapped = fastdispatch.helion_kernel(k)
    x, y, out = _add_args()
    wrapped(x, y, out)
    wrapped(x, y, out)
    assert wrapped.entries()[0].info["config"] == CFG
    k.bind((x, y, out)).set_config(CFG_OTHER)       # Helion's config changed under our entry
    out2 = _poisoned(x)
    wrapped(x, y, out2)                              # stale: cleared, missed, re-published
    assert torch.equal(out2, x + y)
    (entry,) = wrapped.entries()
    assert entry.info["config"] == CFG_OTHER and entry.hits == 0
    wrapped(x, y, out2)
    assert entry.hits == 1
    k.reset()                                        # Helion forgets its bound kernels: so do we
    assert wrapped.num_entries == 0
    out3 = _poisoned(x)
    wrapped(x, y, out3)
    assert torch.equal(out3, x + y) and wrapped.num_entries == 1
    assert wrapped.entries()[0].info["config"] == CFG    # Helion's fresh bind: the kernel's config


# -- bad arguments: Helion's own errors, nothing cached --------------------------------------------
@interpreted
def test_bad_arguments_raise_helions_errors():
    k = _make_add()
    wrapped = fastdispatch.helion_kernel(k)
    x, y, out = _add_args()

    def helion_error(*args, **kwargs):
        with pytest.raises(Exception) as info:
            k(*args, **kwargs)
        return type(info.value)

    for args, kwargs in (((x, y), {}), ((x, y, out, out), {}), ((x, y), {"nope": out})):
        expected = helion_error(*args, **kwargs)
        with pytest.raises(expected):
            wrapped(*args, **kwargs)
    expected = helion_error(x, "not a tensor", out)
    with pytest.raises(expected):
        wrapped(x, "not a tensor", out)
    expected = helion_error(x, torch.randn(7, 3), out)  # rank mismatch: Helion's compile error
    with pytest.raises(expected):
        wrapped(x, torch.randn(7, 3), out)
    assert wrapped.num_entries == 0


# -- the key is at least as fine as Helion's specialization ----------------------------------------
@interpreted
def test_key_is_finer_than_helions_specialization():
    """Any two calls with equal fastdispatch keys have equal Helion specialization keys."""
    ks = [_make_add(static_shapes=True), _make_add(static_shapes=False)]
    calls = []
    for dtype in (torch.float32, torch.float16):
        for n in (1, 2, 16, 17, 1000):
            x, y = torch.randn(n).to(dtype), torch.randn(n).to(dtype)
            calls.append((x, y, torch.empty_like(x)))
            calls.append((x, y.clone(), torch.empty_like(x)))
            if n > 1:
                calls.append((torch.randn(2 * n).to(dtype)[::2], y, torch.empty_like(x)))
    for k in ks:
        wrapped = fastdispatch.helion_kernel(k)
        by_key = {}
        for args in calls:
            by_key.setdefault(wrapped.key_of(*args), set()).add(k.specialization_key(args))
        assert all(len(specs) == 1 for specs in by_key.values())
        assert len(by_key) > 10


# -- torch.compile: Helion's own support, fullgraph ------------------------------------------------
@interpreted
@pytest.mark.skipif(tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) < (2, 12),
                    reason="Helion 1.4.0's torch.compile support does not trace on the CPU in Triton's "
                           "interpreter under torch 2.11 (Dynamo: 'Attempted to inline function marked "
                           "as skipped'); on the GPU, test_gpu_torch_compile_fullgraph_inductor runs it")
def test_torch_compile_fullgraph_uses_helions_support():
    k = _make_add()
    wrapped = fastdispatch.helion_kernel(k)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm

    def f(x, y, out):
        return wrapped(x, y, out) * 2

    x, y, out = _add_args()
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    result = compiled(x, y, out)
    assert torch.equal(result, (x + y) * 2)
    assert graphs and "fastdispatch" not in graphs[0]    # Helion's op, not our custom op
    torch._dynamo.reset()


# -- the launcher ----------------------------------------------------------------------------------
def test_launcher_routes_options(monkeypatch):
    """With the drop-in convention, plain launches go to the cached wrapper's ``[grid]``; a
    launch with Helion-private options goes to Helion's default launcher."""
    seen = []

    class Stub:
        def __getitem__(self, grid):
            return lambda *args, **kw: seen.append(("fd", grid, args, kw))

    def helion_default(jit_fn, grid, *args, **kw):
        seen.append(("helion", grid, args, kw))

    import helion.runtime
    monkeypatch.setattr(fd_helion, "dropin_available", lambda: True)
    monkeypatch.setattr(helion.runtime, "default_launcher", helion_default)
    jit_fn = object()
    monkeypatch.setitem(fd_helion._wrappers, jit_fn, Stub())
    launcher = fd_helion.make_launcher()
    launcher(jit_fn, (4,), 1, 2, num_warps=4, num_stages=1)
    launcher(jit_fn, (4,), 1, 2, num_warps=4, num_stages=1, _minimum_resident_programs=8)
    assert seen == [("fd", (4,), (1, 2), {"num_warps": 4, "num_stages": 1}),
                    ("helion", (4,), (1, 2), {"num_warps": 4, "num_stages": 1,
                                              "_minimum_resident_programs": 8})]


def test_launcher_is_helions_until_the_dropin_lands():
    launcher = fd_helion.make_launcher()
    if fd_helion.dropin_available():
        assert launcher.__name__ == "fastdispatch_launcher"
    else:
        import helion.runtime
        assert launcher is helion.runtime.default_launcher


PY_TWIN_SCRIPT = textwrap.dedent("""
    import json, torch, helion, helion.language as hl, fastdispatch
    from fastdispatch import keys

    @helion.kernel(config=helion.Config(block_sizes=[256], num_warps=4, num_stages=1),
                   static_shapes=True)
    def twin_add(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        for tile in hl.tile(out.size(0)):
            out[tile] = x[tile] + y[tile]
        return out

    k = fastdispatch.helion_kernel(twin_add)
    x, y = torch.randn(1000), torch.randn(1000)
    outs = [torch.full_like(x, float("nan")) for _ in range(3)]
    for out in outs:
        k(x, y, out)
    e = k.entries()[0]
    print(json.dumps({"impl": keys.IMPLEMENTATION, "ok": all(torch.equal(o, x + y) for o in outs),
                      "hits": e.hits, "path": e.info["path"]}))
""")


@pytest.mark.skipif(INTERPRETED, reason="runs its own process")
def test_pure_python_key_builder(tmp_path):
    """FASTDISPATCH_NO_EXTENSIONS=1 (fresh process): the Python ``__call__`` path."""
    env = dict(os.environ, TRITON_INTERPRET="1", FASTDISPATCH_NO_EXTENSIONS="1",
               FASTDISPATCH_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    script = tmp_path / "twin.py"                 # a file: Helion reads the kernel's source
    script.write_text(PY_TWIN_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"impl": "python", "ok": True, "hits": 2, "path": "fast"}


# -- GPU -------------------------------------------------------------------------------------------
def _gpu_cases():
    from fastdispatch.kernels import helion_kernels as hk

    cases = []
    for n, kern in hk.ADD_KERNELS.items():
        cases.append((f"add{n}", kern, lambda n=n: (*[torch.randn(4096, device="cuda")
                                                       for _ in range(n)],
                                                     torch.full((4096,), float("nan"), device="cuda"))))
    for n, kern in hk.ADD_ALLOC_KERNELS.items():
        cases.append((f"add{n}_alloc", kern,
                      lambda n=n: tuple(torch.randn(4096, device="cuda") for _ in range(n))))
    cases.append(("rms_norm", hk.rms_norm,
                  lambda: (torch.randn(64, 1024, device="cuda", dtype=torch.bfloat16),
                           torch.randn(1024, device="cuda", dtype=torch.bfloat16))))
    return cases


def _poison_free_blocks(like_result):
    # Allocating kernels: fill a freed block of the result's size with NaN, so the next
    # allocation of that size (the caching allocator's) starts poisoned.
    t = torch.full_like(like_result, float("nan"))
    del t


def _run(fn, make_args, seed):
    torch.manual_seed(seed)
    args = make_args()
    result = fn(*args)
    torch.cuda.synchronize()
    return result.clone()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["add2", "add8", "add16", "add2_alloc", "add8_alloc",
                                  "add16_alloc", "rms_norm"])
def test_gpu_bit_identical_to_helion(name):
    _, kern, make_args = next(c for c in _gpu_cases() if c[0] == name)
    wrapped = fastdispatch.helion_kernel(kern)
    for seed in range(3):
        expected = _run(kern, make_args, seed)
        _poison_free_blocks(expected)
        first = _run(wrapped, make_args, seed)       # seed 0: the miss; then hits
        _poison_free_blocks(expected)
        hit = _run(wrapped, make_args, seed)
        assert torch.equal(first, expected) and torch.equal(hit, expected), name
        assert not torch.isnan(hit).any()
    (entry,) = wrapped.entries()
    assert entry.info["path"] == "fast" and entry.hits == 5
    if fd_helion.dropin_available():
        assert entry.info["launcher"] == "fastdispatch_launcher"


@pytest.mark.gpu
def test_gpu_cuda_graph_capture_after_warmup():
    from fastdispatch.kernels import helion_kernels as hk

    k = fastdispatch.helion_kernel(hk.add2)
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    out = torch.full_like(x, float("nan"))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        k(x, y, out)                                 # warm-up: the miss, outside capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(10):
            k(x, y, out)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, x + y)
    # a miss during capture is refused before Helion compiles anything
    z = torch.randn(2048, device="cuda")
    graph2 = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="(?i)warm up first"):
        with torch.cuda.graph(graph2):
            k(z, z, torch.empty_like(z))


@pytest.mark.gpu
def test_gpu_torch_compile_fullgraph_inductor():
    from fastdispatch.kernels import helion_kernels as hk

    # The add kernel: Helion 1.4.0's own Inductor lowering of rms_norm passes eps as an fp64
    # scalar to sqrt and fails inside Helion ("Expected dtype ['fp32'] but got fp64"), with or
    # without fastdispatch (seen on the lent H200).
    k = fastdispatch.helion_kernel(hk.add2_alloc)
    x = torch.randn(4096, device="cuda")
    y = torch.randn(4096, device="cuda")

    def f(x, y):
        return k(x, y) + 1

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x, y), x + y + 1)
    torch._dynamo.reset()


@pytest.mark.gpu
def test_gpu_bench_paths_smoke():
    from fastdispatch.bench_helion import helion_paths

    for n in (2, 8, 16):
        paths = helion_paths(n)                       # checks correctness before returning
        assert {"Helion's own call", "fastdispatch.helion_kernel"} <= set(paths)
        for fn in paths.values():
            fn(10)
        torch.cuda.synchronize()


# -- replay of the host function's launch (Helion 1.4 bound kernels) ----------------------------
@interpreted
@pytest.mark.skipif(not fd_helion.helion_version().startswith("1.4"),
                    reason="replays are built for Helion 1.4's bound kernels only (helion_replay.py)")
def test_host_launch_replayed_when_it_only_launches_the_call_tensors():
    """add2/8/16 (out given) replay their one launch: correct, the call's own out returned, one
    hit, and the host function is not run on a hit; an allocating kernel replays its allocation
    too (``torch.empty_like``): a new tensor every call, the host function not run."""
    from fastdispatch.kernels import helion_kernels as hk

    for n, kern in hk.ADD_KERNELS.items():
        k = fastdispatch.helion_kernel(kern)
        xs = [torch.randn(1000) for _ in range(n)]
        out = torch.full((1000,), float("nan"))
        expected = kern(*xs, torch.empty(1000))
        k(*xs, out)                                    # the miss: Helion's own call
        entry = k.entries()[0]
        assert entry.info["path"] == "fast" and entry.info["replay"] is True
        bound = kern.bind(tuple(xs) + (out,))
        saved, runs = bound._run, []
        bound._run = lambda *a, **kw: runs.append(1) or saved(*a, **kw)
        try:
            out.fill_(float("nan"))
            assert k(*xs, out) is out                  # a hit: replayed, not the host function
        finally:
            bound._run = saved
        assert runs == [] and entry.hits == 1 and torch.equal(out, expected)
    alloc = fastdispatch.helion_kernel(hk.add2_alloc)
    x, y = torch.randn(1000), torch.randn(1000)
    alloc(x, y)
    entry = alloc.entries()[0]
    assert entry.info["replay"] is True
    bound = hk.add2_alloc.bind((x, y))
    saved, runs = bound._run, []
    bound._run = lambda *a, **kw: runs.append(1) or saved(*a, **kw)
    try:
        first, second = alloc(x, y), alloc(x, y)
    finally:
        bound._run = saved
    assert runs == [] and entry.hits == 2
    assert first is not second and first.data_ptr() != second.data_ptr()
    assert torch.equal(first, x + y) and torch.equal(second, x + y)


@interpreted
@pytest.mark.skipif(not fd_helion.helion_version().startswith("1.4"),
                    reason="replays are built for Helion 1.4's bound kernels only (helion_replay.py)")
def test_aliased_call_keeps_the_host_function():
    """add2(x, x, out): a replay could not tell t0 from t1 (the same object), and the next call
    with the same key need not alias, so the host function stays."""
    from fastdispatch.kernels import helion_kernels as hk

    k = fastdispatch.helion_kernel(hk.add2)
    x, out = torch.randn(1000), torch.full((1000,), float("nan"))
    assert torch.equal(k(x, x, out), x + x)
    assert k.entries()[0].info["replay"] is False
    p, q, out2 = torch.randn(1000), torch.randn(1000), torch.full((1000,), float("nan"))
    assert k(p, q, out2) is out2 and k.entries()[0].hits == 1
    assert torch.equal(out2, p + q)


@interpreted
@pytest.mark.skipif(not fd_helion.helion_version().startswith("1.4"),
                    reason="direct entries are built from Helion 1.4 replays only (helion_direct.py)")
def test_direct_entry_needs_a_direct_inner_entry():
    """Under the interpreter the inner wrapper's entries are Triton's interpreter (MODE_SLOW):
    the outer entry stays the replay and says why. The inner entry the direct check built at
    the miss (without launching) is the one the replay's first call hits."""
    from fastdispatch.kernels import helion_kernels as hk

    for n, kern in hk.ADD_KERNELS.items():
        k = fastdispatch.helion_kernel(kern)
        size = 700 + n                    # a shape no other test uses: its own generated kernel
        xs = [torch.randn(size) for _ in range(n)]
        out = torch.full((size,), float("nan"))
        k(*xs, out)
        (entry,) = k.entries()
        assert entry.mode == keys.MODE_CALL and entry.info["replay"] is True
        assert "TRITON_INTERPRET=1" in entry.info["direct"]
        inner = fd_helion._wrappers[kern.bind(tuple(xs) + (out,))._run.__globals__[f"_helion_{kern.name}"]]
        (inner_entry,) = inner.entries()
        assert inner_entry.hits == 0
        out.fill_(float("nan"))
        assert k(*xs, out) is out and inner_entry.hits == 1
        assert torch.equal(out, sum(xs[1:], xs[0]))


@interpreted
def test_triton_knob_word_in_the_key_on_helion_14_only():
    """Helion 1.4 + Triton: Triton's debug knob is in the key, as in the inner wrappers' keys
    (a direct entry launches their binary); Helion >= 1.5 keys are unchanged."""
    import triton.knobs as triton_knobs

    k = fastdispatch.helion_kernel(_make_add())
    x, y, out = _add_args()
    before = k.key_of(x, y, out)
    saved = triton_knobs.runtime.debug
    triton_knobs.runtime.debug = not saved
    try:
        after = k.key_of(x, y, out)
    finally:
        triton_knobs.runtime.debug = saved
    assert (before != after) == fd_helion.helion_version().startswith("1.4")
