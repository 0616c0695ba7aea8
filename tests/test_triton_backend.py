"""Triton backend without a GPU: AOT compiles for sm_90 / sm_80, specialization classes,
the launch plan's parameter mapping (with a fake loaded kernel), argument errors that cache
nothing, and numerics in Triton's interpreter (in a subprocess)."""
import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import types

import pytest
import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.runtime.interpreter import InterpretedFunction

import fastdispatch
from fastdispatch import keys
from fastdispatch.backends import triton as tb
from fastdispatch.errors import check_cuda_tensors
from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastdispatch.__file__)))


def add_kernel(n):
    return fastdispatch.triton_kernel(ADD_KERNELS[n], grid=add_grid, constexprs={"BLOCK": BLOCK})


def aligned(numel=4096, offset=0):
    base = torch.randn(numel + 16)
    shift = (16 - base.data_ptr() % 16) % 16 // 4
    return base[shift + offset:shift + offset + numel]


# -- AOT compilation ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 8])
@pytest.mark.parametrize("arch", [90, 80])
def test_aot_compile_for_target(n, arch):
    """add{n} compiles for GPUTarget(cuda, arch) on a CPU machine: cubin (ELF) + PTX for that arch."""
    x = aligned()
    key_text, files = add_kernel(n).compile_for(*([x] * (n + 1)), 4096, target=GPUTarget("cuda", arch, 32))
    assert f"arch=cuda:{arch}:32" in key_text
    cubin = next(data for name, data in files.items() if name.endswith(".cubin"))
    ptx = next(data for name, data in files.items() if name.endswith(".ptx")).decode()
    assert cubin[:4] == b"\x7fELF"
    assert re.search(rf"^\.target sm_{arch}a?\b", ptx, re.M), ptx[:300]
    metadata = json.loads(next(data for name, data in files.items() if name.endswith(".json")))
    assert metadata["name"] == f"add{n}" and metadata["num_warps"] == 4


def test_alignment_gives_a_different_binary():
    """An unaligned pointer compiles to a different key and PTX than the aligned one."""
    k = add_kernel(2)
    x, u = aligned(), aligned(offset=1)
    key_a, files_a = k.compile_for(x, x, x, 4096, target=GPUTarget("cuda", 90, 32))
    key_u, files_u = k.compile_for(u, x, x, 4096, target=GPUTarget("cuda", 90, 32))
    assert key_a != key_u
    assert files_a["add2.ptx"] != files_u["add2.ptx"]


@pytest.mark.parametrize("n_a, n_b, same", [
    (4096, 8192, True), (4097, 4099, True), (2**40, 2**41, True),
    (4096, 4097, False), (4096, 1, False), (4096, 2**40, False), (2**40, 2**63 + 16, False),
])
def test_int_class_decides_the_binary(n_a, n_b, same):
    """Ints of one Triton class share a compile key; different classes do not."""
    k = add_kernel(2)
    x = aligned()
    target = GPUTarget("cuda", 90, 32)
    key_a = k.specialize((x, x, x, n_a), target)[0]
    key_b = k.specialize((x, x, x, n_b), target)[0]
    assert (key_a == key_b) is same
    assert (k.key_of(x, x, x, n_a) == k.key_of(x, x, x, n_b)) is same


def test_fixed_constexpr_and_arch_in_key():
    """The fixed BLOCK and the arch are part of the compile key."""
    x = aligned()
    k1 = fastdispatch.triton_kernel(ADD_KERNELS[2], grid=add_grid, constexprs={"BLOCK": 1024})
    k2 = fastdispatch.triton_kernel(ADD_KERNELS[2], grid=add_grid, constexprs={"BLOCK": 512})
    t90, t80 = GPUTarget("cuda", 90, 32), GPUTarget("cuda", 80, 32)
    assert k1.specialize((x, x, x, 64), t90)[0] != k2.specialize((x, x, x, 64), t90)[0]
    assert k1.specialize((x, x, x, 64), t90)[0] != k1.specialize((x, x, x, 64), t80)[0]
    assert k1.param_names == ("t0", "t1", "out", "n") and k1.roles[:4] == bytes(4)
    assert k1.option_names == tb.LAUNCH_OPTIONS and set(k1.roles[4:]) == {keys.ROLE_CONSTEXPR}


# -- launch plan (fake loaded kernel: the mapping logic only) ------------------------------------
@triton.jit
def _mixed(p, n, f, flag, q, m, SCALE: tl.constexpr, BLOCK: tl.constexpr):
    pass


def _metadata(**changes):
    md = dict(num_warps=8, shared=2048, num_ctas=1, global_scratch_size=0, profile_scratch_size=0,
              tensordesc_meta=None, instrumentation_mode="", launch_pdl=False,
              launch_cooperative_grid=False)
    md.update(changes)
    return types.SimpleNamespace(**md)


@pytest.fixture
def fake_driver(monkeypatch):
    """Pretend libcuda and a context exist, so launch_plan's pure mapping logic runs on a CPU."""
    from fastdispatch.launchers import _driver

    monkeypatch.setattr(_driver, "available", lambda: True)
    monkeypatch.setattr(_driver, "current_context_handle", lambda: 0xC0FFEE)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())


def test_launch_plan_parameter_mapping(fake_driver):
    """Plan: runtime params in order (constexprs and ==1 ints dropped), two NULL scratch slots."""
    k = fastdispatch.triton_kernel(_mixed, grid=(3,), constexprs={"BLOCK": 128})
    x = aligned()
    args = (x, 7, 0.5, True, x, 1, 4)          # m == 1 specializes away; SCALE is per call
    _, src, _ = k.specialize(args, GPUTarget("cuda", 90, 32))
    kernel = types.SimpleNamespace(metadata=_metadata(), fd_handles=(0x1234, 0xC0FFEE, 0))
    plan = k.launch_plan(kernel, src, 0)
    assert plan["param_kinds"] == [tb.PARAM_PTR, tb.PARAM_I32, tb.PARAM_F32, tb.PARAM_U8, tb.PARAM_PTR,
                                   tb.PARAM_NULL, tb.PARAM_NULL]
    assert plan["param_args"][:5] == [0, 1, 2, 3, 4]
    assert plan["block_x"] == 256 and plan["shared_bytes"] == 2048 and plan["attrs"] == []
    assert plan["function"] == 0x1234 and plan["context"] == 0xC0FFEE
    args64 = (x, 2**40, 0.5, False, None, 2**63 + 1, 4)   # i64, u64 and a None pointer
    _, src64, _ = k.specialize(args64, GPUTarget("cuda", 90, 32))
    plan64 = k.launch_plan(kernel, src64, 0)
    assert plan64["param_kinds"] == [tb.PARAM_PTR, tb.PARAM_I64, tb.PARAM_F32, tb.PARAM_U8, tb.PARAM_I64,
                                     tb.PARAM_NULL, tb.PARAM_NULL]
    assert plan64["param_args"][:5] == [0, 1, 2, 3, 5]


@pytest.mark.parametrize("changes, reason", [
    ({"global_scratch_size": 128}, "scratch"),
    ({"profile_scratch_size": 64}, "scratch"),
    ({"tensordesc_meta": [{"x": 1}]}, "tensor descriptors"),
    ({"instrumentation_mode": "fpsan"}, "instrumentation"),
    ({"num_ctas": 16}, "16-CTA"),
])
def test_launch_plan_refuses_what_it_cannot_express(fake_driver, changes, reason):
    """Scratch memory, descriptors, instrumentation, 16-CTA clusters: _NoFastPath (slow path)."""
    k = add_kernel(2)
    x = aligned()
    _, src, _ = k.specialize((x, x, x, 64), GPUTarget("cuda", 90, 32))
    with pytest.raises(tb._NoFastPath, match=reason):
        k.launch_plan(types.SimpleNamespace(metadata=_metadata(**changes), fd_handles=(1, 0xC0FFEE, 0)), src, 0)


def test_launch_plan_needs_a_module_loaded_in_the_devices_context(fake_driver):
    """A binary not loaded by our driver module, or loaded in another context: Triton's path."""
    k = add_kernel(2)
    x = aligned()
    _, src, _ = k.specialize((x, x, x, 64), GPUTarget("cuda", 90, 32))
    with pytest.raises(tb._NoFastPath, match="not loaded"):
        k.launch_plan(types.SimpleNamespace(metadata=_metadata(), fd_handles=None), src, 0)
    with pytest.raises(tb._NoFastPath, match="another context"):
        k.launch_plan(types.SimpleNamespace(metadata=_metadata(), fd_handles=(1, 0xBAD, 0)), src, 0)


def test_launch_plan_attributes(fake_driver):
    """PDL, cooperative grids and clusters become launch attributes."""
    k = add_kernel(2)
    x = aligned()
    _, src, _ = k.specialize((x, x, x, 64), GPUTarget("cuda", 90, 32))
    md = _metadata(launch_pdl=True, launch_cooperative_grid=True, num_ctas=2)
    plan = k.launch_plan(types.SimpleNamespace(metadata=md, fd_handles=(1, 0xC0FFEE, 0)), src, 0)
    assert plan["attrs"] == [(tb.ATTR_PDL, 1), (tb.ATTR_COOPERATIVE, 1),
                             (tb.ATTR_CLUSTER_DIMENSION, (2, 1, 1)),
                             (tb.ATTR_CLUSTER_SCHEDULING, tb.CLUSTER_SCHEDULING_SPREAD)]
    assert plan["num_ctas"] == 2


def test_launch_plan_without_driver_is_no_fast_path():
    """On a machine without libcuda the plan is refused as _NoFastPath (never a crash)."""
    from fastdispatch.launchers import _driver

    if _driver.available():
        pytest.skip("libcuda is present here")
    k = add_kernel(2)
    x = aligned()
    _, src, _ = k.specialize((x, x, x, 64), GPUTarget("cuda", 90, 32))
    with pytest.raises(tb._NoFastPath):
        k.launch_plan(types.SimpleNamespace(metadata=_metadata(), fd_handles=(1, 0xC0FFEE, 0)), src, 0)


# -- errors ----------------------------------------------------------------------------------------
def test_non_jit_function_rejected():
    """A plain Python function is not a Triton kernel."""
    with pytest.raises(TypeError, match="@triton.jit"):
        fastdispatch.triton_kernel(lambda x: x, grid=(1,))


@pytest.mark.parametrize("grid, exc", [("abc", TypeError), ((1, 2, 3, 4), ValueError),
                                       ((), ValueError), ((-1,), ValueError), ((1.5,), ValueError)])
def test_bad_grid_rejected(grid, exc):
    """Grids must be 1-3 non-negative ints or a callable."""
    with pytest.raises(exc, match="grid"):
        fastdispatch.triton_kernel(ADD_KERNELS[2], grid=grid, constexprs={"BLOCK": BLOCK})


def test_constexprs_must_name_constexpr_parameters():
    """constexprs naming a non-parameter, or a runtime parameter, is a ValueError naming it."""
    with pytest.raises(ValueError, match="'BLOK', which is not a parameter"):
        fastdispatch.triton_kernel(ADD_KERNELS[2], grid=(1,), constexprs={"BLOK": 1})
    with pytest.raises(ValueError, match="'n' is not a tl.constexpr parameter"):
        fastdispatch.triton_kernel(ADD_KERNELS[2], grid=(1,), constexprs={"n": 1})


def _bad_calls():
    x = torch.randn(64)
    c = torch.randn(64, dtype=torch.complex64)
    return {
        "cpu tensor": (lambda k: k(x, x, x, 64), ValueError, r"argument 't0' is on cpu.*CUDA"),
        "complex": (lambda k: k(c, x, x, 64), ValueError,
                    r"argument 't0' has dtype torch.complex64.*expected one of.*float32"),
        "list for pointer": (lambda k: k(x, [1.0, 2.0], x, 64), TypeError,
                             r"argument 't1' must be a torch.Tensor.*got list"),
        "no tensor": (lambda k: k(1, 2, 3, 64), ValueError, r"at least one tensor"),
        "too many": (lambda k: k(x, x, x, 64, 5), TypeError, r"takes 4 arguments"),
        "unknown kwarg": (lambda k: k(x, x, x, 64, BLOCK=3), TypeError, r"unexpected keyword argument 'BLOCK'"),
    }


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_bad_calls_raise_and_cache_nothing(case, stats_delta):
    """Bad arguments raise a clear error naming the argument; nothing is compiled or published."""
    call, exc, match = _bad_calls()[case]
    k = add_kernel(2)
    with pytest.raises(exc, match=match):
        call(k)
    assert k.num_entries == 0
    assert stats_delta("compiles") == 0 and stats_delta("misses") == 0


def test_different_devices_named():
    """Tensors on two devices: ValueError naming both arguments and devices."""
    cpu, meta = torch.randn(4), torch.empty(4, device="meta")
    with pytest.raises(ValueError, match=r"different devices: 'a' is on cpu but 'b' is on meta"):
        check_cuda_tensors("k", [("a", cpu), ("n", 3), ("b", meta)], allow_cpu=True)
    k = fastdispatch.triton_kernel(InterpretedFunction(ADD_KERNELS[2].fn), grid=(1,), constexprs={"BLOCK": 64})
    with pytest.raises(ValueError, match=r"'t0' is on cpu but 't1' is on meta"):
        k(cpu, meta, cpu, 4)
    assert k.num_entries == 0


def test_supported_dtypes_list():
    """Every dtype a Triton pointer takes is accepted; complex and fp8 e8m0 are not."""
    from fastdispatch.errors import SUPPORTED_DTYPES

    assert {torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.bool} <= SUPPORTED_DTYPES
    assert torch.complex64 not in SUPPORTED_DTYPES and torch.complex128 not in SUPPORTED_DTYPES


# -- interpreter numerics --------------------------------------------------------------------------
INTERPRETER_SCRIPT = textwrap.dedent("""
    import json, torch, fastdispatch
    from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid
    report = {}
    for n, fn in ADD_KERNELS.items():
        k = fastdispatch.triton_kernel(fn, grid=add_grid, constexprs={"BLOCK": BLOCK})
        g = torch.Generator().manual_seed(100 + n)
        numel = 2 * BLOCK + 37 * n                      # a partial last block
        errors = []
        for call in range(2):                           # a miss, then a hit
            xs = [torch.randn(numel, generator=g) for _ in range(n)]
            out = torch.full((numel,), float("nan"))
            k(*xs, out, numel)
            ref = xs[0].clone()
            for x in xs[1:]:
                ref += x                                # the kernel's summation order
            try:
                torch.testing.assert_close(out, ref, rtol=1e-6, atol=0)
                errors.append(None)
            except AssertionError as exc:
                errors.append(str(exc))
        entry = k.published()[0]
        report[n] = {"errors": errors, "entries": k.num_entries, "mode": entry.mode,
                     "hits": entry.hits, "fallback": entry.info.get("fallback")}
    print(json.dumps(report))
""")


def test_interpreter_numerics_add2_add8_add16(tmp_path):
    """TRITON_INTERPRET=1 (in a fresh process): add2/8/16 through triton_kernel match torch."""
    env = dict(os.environ, TRITON_INTERPRET="1", FASTDISPATCH_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", INTERPRETER_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report) == {"2", "8", "16"}
    for n, row in report.items():
        assert row["errors"] == [None, None], (n, row["errors"])
        assert row["entries"] == 1 and row["hits"] == 1
        assert row["mode"] == fastdispatch.keys.MODE_SLOW and row["fallback"] == "TRITON_INTERPRET=1"


def test_globals_guard_holds_the_live_constexpr():
    """Triton deep-copies each global a kernel reads; the guard keeps the live object for an
    equal ``tl.constexpr`` (so the hot path's identity check answers) and Triton's copy
    otherwise (a mutable value, a changed one, a missing name)."""
    import copy

    import triton.language as tl
    from fastdispatch.backends.triton.kernel import _guard_value

    live = tl.constexpr(1024)
    scope = {"B": live, "L": [1, 2], "C": tl.constexpr(8)}
    assert _guard_value(scope, "B", copy.deepcopy(live)) is live
    copied = copy.deepcopy(scope["L"])
    assert _guard_value(scope, "L", copied) is copied            # mutable: Triton's copy
    stale = tl.constexpr(4)
    assert _guard_value(scope, "C", stale) is stale              # changed since the compile
    assert _guard_value(scope, "missing", stale) is stale
