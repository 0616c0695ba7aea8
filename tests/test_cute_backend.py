"""CuTe DSL backend: compile without a GPU (sm_90a, sm_100a), size-generic compile keys, one
compile per argument class, argument errors, the on-disk binary cache; GPU tests (marked) for
correctness, binary reuse across sizes, CUDA graph capture and a cold key under 16 threads.

CPU tests compile ``cute_add`` a handful of times (~0.2 s each here)."""
import threading

import pytest
import torch

import cutlass
import cutlass.cute as cute
import cuda.bindings.driver as cuda

from fastdispatch import _stats
from fastdispatch.backends import cute as cute_backend
from fastdispatch.backends.cute import TensorClass, cute_kernel
from fastdispatch.kernels.cute_add import THREADS, compile_tvm_ffi_add, cute_add, cute_add_kernel
from fastdispatch.knobs import scope


def _f32(n, aligned=True):
    """A CPU fp32 vector of length n, 16-byte aligned or at an offset of one element."""
    base = torch.empty(n + 8, dtype=torch.float32)
    return base[:n] if aligned else base[1:n + 1]


@pytest.fixture
def fresh():
    """Empty in-memory binary cache and no disk cache: every class compiles in this test."""
    cute_backend.clear_memory_cache()
    with scope(disk_cache=False):
        yield
    cute_backend.clear_memory_cache()


# -- compile without a GPU -------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["sm_90a", "sm_100a"])
def test_compiles_for_arch_without_gpu(arch):
    x = _f32(100)
    binary = cute_add_kernel().compile_for(x, x, x, arch=arch)
    assert f".target {arch}" in binary.ptx
    entries = [line for line in binary.ptx.splitlines() if line.startswith(".visible .entry")]
    assert len(entries) == 1 and "cute_add_kernel" in entries[0], entries
    assert binary.files["kernel.o"][:4] == b"\x7fELF"      # the exported host object
    assert binary.key.split("|")[3] == f"arch={arch}"


def test_compile_for_accepts_triton_target():
    # fastdispatch.precompile passes a GPUTarget and unpacks (key, files).
    from triton.backends.compiler import GPUTarget

    x = _f32(8)
    key, files = cute_add_kernel().compile_for(x, x, x, target=GPUTarget("cuda", 90, 32))
    assert "arch=sm_90a" in key and "kernel.o" in files


def test_compile_for_rejects_bad_arch_and_count():
    x = _f32(8)
    with pytest.raises(ValueError, match="arch must look like"):
        cute_add_kernel().compile_for(x, x, x, arch="hopper")
    with pytest.raises(TypeError, match="takes 3 arguments"):
        cute_add_kernel().compile_for(x, x, arch="sm_90a")


# -- compile keys ----------------------------------------------------------------------------
def test_compile_key_is_size_generic_but_keeps_dtype_alignment_layout_arch():
    k = cute_add_kernel()

    def key(*args, arch="sm_90a"):
        return k.key_text(args, arch)

    small, big = _f32(7), _f32(100_003)
    assert key(small, small, small) == key(big, big, big) == key(small, big, _f32(1))
    unaligned = _f32(7, aligned=False)
    assert key(unaligned, small, small) != key(small, small, small)
    assert key(small, small, small, arch="sm_100a") != key(small, small, small)
    half = torch.empty(7, dtype=torch.float16)
    assert key(half, half, half) != key(small, small, small)
    strided = torch.empty(14)[::2]
    assert key(strided, small, small) != key(small, small, small)
    matrix = torch.empty(3, 4)
    assert key(matrix, small, small) != key(small, small, small)   # rank


def test_tensor_class():
    t = _f32(10, aligned=False)
    c = TensorClass.of(t)
    assert (c.dtype, c.rank, c.aligned16, c.compact, c.wide) == (torch.float32, 1, False, True, False)
    assert TensorClass.of(torch.empty(4, 5).t()).compact is False
    assert TensorClass.of(torch.empty(4, 5)).compact is True
    assert "a4" in c.text() and "a16" in TensorClass.of(_f32(10)).text()


def test_compile_key_has_versions_source_and_options():
    k = cute_add_kernel()
    x = _f32(8)
    text = k.key_text((x, x, x), "sm_90a")
    assert "nvidia-cutlass-dsl=" in text and "apache-tvm-ffi=" in text and "src=" in text
    other = cute_kernel(cute_add, compile_options="--opt-level 2")
    assert other.key_text((x, x, x), "sm_90a") != text


# -- one compile per class -------------------------------------------------------------------
def test_one_compile_per_class_many_sizes(fresh):
    k = cute_kernel(cute_add)
    before = _stats.snapshot().get("compiles", 0)
    first = k.compile_for(_f32(1), _f32(1), _f32(1), arch="sm_90a", keep_ptx=False)
    for n in (2, 255, 256, 257, 4096, 100_003):
        assert k.compile_for(_f32(n), _f32(n), _f32(n), arch="sm_90a", keep_ptx=False) is first
    assert k.compiles == 1
    # A second wrapper of the same function shares the binary (module-level memory cache).
    again = cute_kernel(cute_add).compile_for(_f32(9), _f32(9), _f32(9), arch="sm_90a", keep_ptx=False)
    assert again is first
    # Another alignment class is another binary.
    u = _f32(9, aligned=False)
    assert k.compile_for(u, u, u, arch="sm_90a", keep_ptx=False) is not first
    assert k.compiles == 2
    assert _stats.snapshot()["compiles"] - before == 2


def test_compile_key_threads_compile_once(fresh):
    # 8 threads on one cold compile key (different sizes): one cute.compile, one binary.
    k = cute_kernel(cute_add)
    barrier = threading.Barrier(8)
    out, errors = [], []

    def work(n):
        try:
            barrier.wait()
            out.append(k.compile_for(_f32(n), _f32(n), _f32(n), arch="sm_90a", keep_ptx=False))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert k.compiles == 1 and all(b is out[0] for b in out)


# -- argument errors -------------------------------------------------------------------------
def test_cpu_tensor_is_value_error_naming_argument():
    k = cute_add_kernel()
    with pytest.raises(ValueError, match=r"cute_add\(\): argument 'a' is on cpu"):
        k(_f32(4), _f32(4), _f32(4))


def test_wrong_argument_count_is_type_error():
    k = cute_add_kernel()
    x = _f32(4)
    with pytest.raises(TypeError, match="missing argument 'out'"):
        k(x, x)
    with pytest.raises(TypeError, match="takes 3 arguments"):
        k(x, x, x, x)
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        k(x, x, x, c=x)


@pytest.mark.parametrize("bad, position", [(3, 0), ("s", 2), (None, 1), ([1.0], 0)])
def test_non_tensor_is_type_error_naming_argument(bad, position):
    args = [_f32(4), _f32(4), _f32(4)]
    args[position] = bad
    name = ("a", "b", "out")[position]
    with pytest.raises(TypeError, match=rf"argument '{name}' must be a torch.Tensor"):
        cute_add_kernel()(*args)


def test_wrap_time_errors():
    @cute.jit
    def no_stream(a: cute.Tensor):
        pass

    with pytest.raises(ValueError, match="needs a stream parameter"):
        cute_kernel(no_stream)
    with pytest.raises(TypeError, match="jit_fn must be"):
        cute_kernel(42)
    with pytest.raises(ValueError, match="must not set --gpu-arch"):
        cute_kernel(cute_add, compile_options="--gpu-arch sm_80")
    with pytest.raises(ValueError, match="param_names has 2 names"):
        cute_kernel(cute_add, param_names=["x", "y"])
    with pytest.raises(ValueError, match="constexprs names 'nope'"):
        cute_kernel(cute_add, constexprs={"nope": 1})


def test_param_names_rename_the_call():
    k = cute_kernel(cute_add, param_names=["x", "y", "z"], name="my_add")
    assert k.param_names == ("x", "y", "z")
    with pytest.raises(ValueError, match=r"my_add\(\): argument 'x' is on cpu"):
        k(_f32(4), _f32(4), _f32(4))


# -- scalars and constexprs ------------------------------------------------------------------
@cute.kernel
def _scale_kernel(x: cute.Tensor, out: cute.Tensor, alpha: cutlass.Float32, block: cutlass.Constexpr):
    tidx, _, _ = cute.arch.thread_idx()
    bidx, _, _ = cute.arch.block_idx()
    i = bidx * block + tidx
    if i < cute.size(out):
        out[i] = x[i] * alpha


@cute.jit
def _scale(x: cute.Tensor, out: cute.Tensor, alpha: cutlass.Float32, stream: cuda.CUstream,
           block: cutlass.Constexpr = 128):
    n = cute.size(out)
    _scale_kernel(x, out, alpha, block).launch(grid=[cutlass.max((n + block - 1) // block, 1), 1, 1],
                                               block=[block, 1, 1], stream=stream)


def test_scalar_and_constexpr_parameters(fresh):
    k = cute_kernel(_scale, constexprs={"block": 64})
    assert k.param_names == ("x", "out", "alpha")
    x = _f32(10)
    text = k.key_text((x, x, 2.0), "sm_90a")
    assert "S(Float32)" in text and "block=64" in text
    assert k.key_text((x, x, 3.5), "sm_90a") == text         # the value is a runtime argument
    binary = k.compile_for(x, x, 2.0, arch="sm_90a")
    assert ".entry" in binary.ptx and ".param .f32" in binary.ptx
    assert cute_kernel(_scale).fixed_constexprs == {"block": 128}   # Constexpr default


# -- on-disk cache ---------------------------------------------------------------------------
def test_disk_cache_round_trip_loads_without_gpu():
    import tvm_ffi

    cute_backend.clear_memory_cache()
    k = cute_kernel(cute_add)
    x = _f32(33)
    before = _stats.snapshot()
    compiled = k.compile_for(x, x, x, arch="sm_90a", keep_ptx=False)
    cute_backend.clear_memory_cache()
    loaded = k.compile_for(x, x, x, arch="sm_90a", keep_ptx=False)
    after = _stats.snapshot()
    assert compiled.source in ("compile", "disk") and loaded.source == "disk"
    assert loaded.files == compiled.files and loaded.key == compiled.key
    assert after.get("disk_hits", 0) - before.get("disk_hits", 0) >= 1
    assert isinstance(loaded.fn, tvm_ffi.Function)
    # The loaded function is the real binary: TVM-FFI checks the call against its signature.
    with pytest.raises(ValueError, match="expected device_type=cuda"):
        loaded.fn(x, x, x)
    with pytest.raises(TypeError, match="Expects 3 parameters"):
        loaded.fn(x, x)
    cute_backend.clear_memory_cache()


def test_corrupt_disk_entry_is_recompiled(tmp_path):
    from fastdispatch import cache

    cute_backend.clear_memory_cache()
    with scope(cache_dir=str(tmp_path)):
        k = cute_kernel(cute_add)
        x = _f32(5, aligned=False)
        first = k.compile_for(x, x, x, arch="sm_100a", keep_ptx=False)
        entry = tmp_path / "cute" / cache.key_digest(first.key) / "kernel.o"
        entry.write_bytes(entry.read_bytes()[:100])       # truncated
        cute_backend.clear_memory_cache()
        again = k.compile_for(x, x, x, arch="sm_100a", keep_ptx=False)
        assert again.source == "compile" and again.files == first.files
    cute_backend.clear_memory_cache()


def test_compile_tvm_ffi_add_aot():
    compiled = compile_tvm_ffi_add(arch="sm_90a")
    assert hasattr(compiled, "__tvm_ffi_object__")
    assert compiled.fastdispatch_binary.key.split("|")[3] == "arch=sm_90a"


# -- GPU -------------------------------------------------------------------------------------
SIZES = [1, 3, 255, THREADS, THREADS + 1, 4096, 4099, 100_003]


def _cuda(n, aligned=True, fill=None):
    base = torch.randn(n + 8, device="cuda", dtype=torch.float32)
    t = base[:n] if aligned else base[1:n + 1]
    if fill is not None:
        t.fill_(fill)
    return t


@pytest.mark.gpu
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("n", SIZES)
def test_gpu_cute_add_correct(n, aligned):
    k = cute_add_kernel()
    a, b = _cuda(n, aligned), _cuda(n, aligned)
    out = _cuda(n, aligned, fill=float("nan"))
    k(a, b, out)
    k(a, b, out)          # and once through the hot path (a hit)
    torch.cuda.synchronize()
    torch.testing.assert_close(out, a + b, rtol=0, atol=0)


@pytest.mark.gpu
def test_gpu_empty_call_is_noop():
    k = cute_add_kernel()
    e = torch.empty(0, device="cuda")
    k(e, e, e)
    torch.cuda.synchronize()


@pytest.mark.gpu
def test_gpu_size_change_reuses_binary(fresh):
    k = cute_kernel(cute_add)
    for n in SIZES:
        a, b, out = _cuda(n), _cuda(n), _cuda(n, fill=float("nan"))
        k(a, b, out)
        torch.cuda.synchronize()
        torch.testing.assert_close(out, a + b, rtol=0, atol=0)
    assert k.compiles == 1
    assert k.num_entries == 1                    # the key is the layout class: new sizes hit
    assert len({e.info["key"] for e in k.entries()}) == 1
    assert len({id(e.fn) for e in k.entries()}) == 1


@pytest.mark.gpu
def test_gpu_graph_capture_replays():
    k = cute_add_kernel()
    n = 4099
    a, b, out = _cuda(n), _cuda(n), _cuda(n, fill=float("nan"))
    k(a, b, out)   # warm up: the key is compiled and published before capture
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            k(a, b, out)        # the env stream is the capturing stream
    torch.cuda.current_stream().wait_stream(stream)
    for _ in range(3):
        a.copy_(torch.randn_like(a)); b.copy_(torch.randn_like(b)); out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(out, a + b, rtol=0, atol=0)


@pytest.mark.gpu
def test_gpu_cold_key_16_threads_compile_once(fresh):
    k = cute_kernel(cute_add)
    barrier = threading.Barrier(16)
    errors = []
    tensors = [(_cuda(n), _cuda(n), _cuda(n, fill=float("nan"))) for n in range(100, 116)]

    def work(i):
        try:
            barrier.wait()
            a, b, out = tensors[i]
            k(a, b, out)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    torch.cuda.synchronize()
    for a, b, out in tensors:
        torch.testing.assert_close(out, a + b, rtol=0, atol=0)
    assert k.compiles == 1


@pytest.mark.gpu
def test_gpu_raw_and_kwargs_paths_agree():
    compiled = compile_tvm_ffi_add()
    raw = compiled.__tvm_ffi_object__()
    assert raw is not None
    for call in (raw, compiled):
        a, b, out = _cuda(4096), _cuda(4096), _cuda(4096, fill=float("nan"))
        call(a, b, out)
        torch.cuda.synchronize()
        torch.testing.assert_close(out, a + b, rtol=0, atol=0)


@pytest.mark.gpu
def test_gpu_shape_mismatch_and_wrong_dtype():
    k = cute_add_kernel()
    with pytest.raises(ValueError, match="one length"):
        k(_cuda(4), _cuda(5), _cuda(4))
    h = torch.zeros(4, device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="argument 'b' must be float32"):
        k(_cuda(4), h, _cuda(4))
