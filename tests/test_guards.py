"""Guards of the direct launcher that a CPU can check (DESIGN §2): the fast-path switch, the
debug knob in the key, priming failures falling back for good with one log line, captured
globals. ``make_entry`` runs for real (specialize + AOT compile for sm_90); only the GPU-bound
steps (device lookup, module load, the plan's driver calls) are replaced by fakes. The launch
hooks and the globals guard at launch time need a GPU: ``test_gpu_launch.py``."""
import logging
import types

import pytest
import torch
import triton
import triton.knobs as triton_knobs
import triton.language as tl
from triton.backends.compiler import GPUTarget

import fastdispatch
from fastdispatch import keys
from fastdispatch.backends import triton as tb
from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid
from fastdispatch.knobs import Knobs, knobs, scope

FAKE_PLAN = {"function": 1, "context": 1, "block_x": 128, "num_ctas": 1, "shared_bytes": 0,
             "param_kinds": [0, 0, 0, 1, 6, 6], "param_args": [0, 1, 2, 3, 0, 0], "attrs": []}


@pytest.fixture
def no_gpu_needed(monkeypatch):
    """Fake the GPU-bound steps of make_entry; record launch_plan calls."""
    calls = []
    monkeypatch.setattr(tb.TritonKernel, "_device_of", lambda self, args: 0)
    monkeypatch.setattr(tb.binaries, "target_for_device", lambda device: GPUTarget("cuda", 90, 32))
    monkeypatch.setattr(tb.binaries, "loaded_kernel",
                        lambda key_text, src, files, device: types.SimpleNamespace(name="fake"))

    def plan(self, kernel, src, device):
        calls.append(src)
        return dict(FAKE_PLAN)

    monkeypatch.setattr(tb.TritonKernel, "launch_plan", plan)
    return calls


def entry_for(k, *args):
    return k.make_entry(args, k.key_of(*args))


def x():
    return torch.randn(4096)


def add2():
    return fastdispatch.triton_kernel(ADD_KERNELS[2], grid=add_grid, constexprs={"BLOCK": BLOCK})


needs_cython = pytest.mark.skipif(keys.IMPLEMENTATION != "cython",
                                  reason="direct launches need the compiled key builder")


@needs_cython
def test_fast_path_by_default(no_gpu_needed):
    """With every check passing, make_entry primes a direct-launch (MODE_DRIVER) entry."""
    t = x()
    e = entry_for(add2(), t, t, t, 4096)
    assert e.mode == keys.MODE_DRIVER and len(no_gpu_needed) == 1
    assert "fallback" not in e.info


def test_disable_fast_path_scope_gives_slow_entries(no_gpu_needed, stats_delta):
    """knobs.scope(disable_fast_path=True): MODE_SLOW entries, no plan built, reason recorded."""
    t = x()
    with scope(disable_fast_path=True):
        e = entry_for(add2(), t, t, t, 4096)
    assert e.mode == keys.MODE_SLOW and no_gpu_needed == []
    assert e.info["fallback"] == "FASTDISPATCH_DISABLE_FAST_PATH=1"
    assert fastdispatch.stats()["fallbacks"].get("FASTDISPATCH_DISABLE_FAST_PATH=1", 0) >= 1
    assert knobs.disable_fast_path is False            # the scope restored it


def test_disable_fast_path_env_var(monkeypatch):
    """FASTDISPATCH_DISABLE_FAST_PATH=1 in the environment sets the knob."""
    monkeypatch.setenv("FASTDISPATCH_DISABLE_FAST_PATH", "1")
    assert Knobs.from_env().disable_fast_path is True
    monkeypatch.setenv("FASTDISPATCH_DISABLE_FAST_PATH", "0")
    assert Knobs.from_env().disable_fast_path is False


def test_knob_scope_rejects_unknown_names():
    """scope() with a misspelt knob is a TypeError listing the known ones."""
    with pytest.raises(TypeError, match="unknown knob"):
        with scope(disable_fastpath=True):
            pass


def test_python_key_builder_gives_slow_entries(no_gpu_needed, monkeypatch):
    """With the pure-Python key builder live, Triton entries launch through Triton."""
    monkeypatch.setattr(keys, "IMPLEMENTATION", "python")
    t = x()
    e = entry_for(add2(), t, t, t, 4096)
    assert e.mode == keys.MODE_SLOW and e.info["fallback"].startswith("key builder is python")
    assert no_gpu_needed == []


@needs_cython
def test_priming_failure_is_slow_for_good_with_one_warning(monkeypatch, no_gpu_needed, caplog, stats_delta):
    """launch_plan raising: slow entry, one warning line, and every later key slow without retrying."""
    calls = []

    def broken(self, kernel, src, device):
        calls.append(1)
        raise RuntimeError("cuFuncGetAttribute exploded")

    monkeypatch.setattr(tb.TritonKernel, "launch_plan", broken)
    k = add2()
    t = x()
    with caplog.at_level(logging.INFO, logger="fastdispatch"):
        e1 = entry_for(k, t, t, t, 4096)
        e2 = entry_for(k, t, t, t, 4097)               # another key of the same kernel
        e3 = entry_for(k, t[1:], t, t, 4095)
    assert [e.mode for e in (e1, e2, e3)] == [keys.MODE_SLOW] * 3
    assert calls == [1]
    assert "priming failed: RuntimeError: cuFuncGetAttribute exploded" in e2.info["fallback"]
    lines = [r for r in caplog.records if r.name == "fastdispatch" and r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "fast path disabled for kernel add2" in lines[0].getMessage()
    monkeypatch.setattr(tb.TritonKernel, "launch_plan", lambda self, *a: dict(FAKE_PLAN))
    assert entry_for(k, t, t, t, 4098).mode == keys.MODE_SLOW   # broken kernel: still slow
    other = entry_for(add2(), t, t, t, 4096)           # another kernel is not affected
    assert other.mode == (keys.MODE_DRIVER if keys.IMPLEMENTATION == "cython" else keys.MODE_SLOW)


@needs_cython
def test_inexpressible_binary_is_slow_for_that_key_only(monkeypatch, no_gpu_needed, caplog):
    """_NoFastPath (e.g. scratch memory) makes that entry slow, logs at info, and retries next key."""
    calls = []

    def refuse(self, kernel, src, device):
        calls.append(1)
        raise tb._NoFastPath("kernel needs scratch memory")

    monkeypatch.setattr(tb.TritonKernel, "launch_plan", refuse)
    k = add2()
    t = x()
    with caplog.at_level(logging.INFO, logger="fastdispatch"):
        e1 = entry_for(k, t, t, t, 4096)
        e2 = entry_for(k, t, t, t, 4097)
    assert e1.mode == e2.mode == keys.MODE_SLOW and calls == [1, 1]
    assert e1.info["fallback"] == "kernel needs scratch memory"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert k._broken_reason is None


def test_debug_knob_is_in_both_keys():
    """triton.knobs.runtime.debug changes the fast key and the Triton compile key."""
    k = add2()
    t = x()
    args = (t, t, t, 4096)
    fast, compile_key = k.key_of(*args), k.specialize(args, GPUTarget("cuda", 90, 32))[0]
    with triton_knobs.runtime.scope():
        triton_knobs.runtime.debug = not triton_knobs.runtime.debug
        assert k.key_of(*args) != fast
        assert k.specialize(args, GPUTarget("cuda", 90, 32))[0] != compile_key
    assert k.key_of(*args) == fast


SCALE = tl.constexpr(3)


@triton.jit
def _reads_global(x, out, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + offs, tl.load(x + offs, mask=offs < n) * SCALE, mask=offs < n)


def test_globals_read_by_the_kernel_are_guarded(no_gpu_needed):
    """The entry's slow launch carries the kernel's used globals with their compile-time values."""
    k = fastdispatch.triton_kernel(_reads_global, grid=(4,), constexprs={"BLOCK": 1024})
    t = x()
    e = entry_for(k, t, t, 4096)
    guard = e.slow.args[2]   # partial(_slow_launch, kernel, device, guard, values)
    assert [(name, value) for _, name, value in guard] == [("SCALE", SCALE)]
    assert guard[0][0] is _reads_global.fn.__globals__
