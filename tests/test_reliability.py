"""Reliability: interrupted compiles, a full disk, fuzzed argument validation. Each case states
what happens; the README's reliability table lists them."""
import errno
import logging
import pathlib

import pytest
import torch
import triton
from hypothesis import given, settings, strategies as st
from triton.backends.compiler import GPUTarget

import fastdispatch
from fastdispatch import cache
from fastdispatch.backends import triton as tb
from fastdispatch.backends.reference import ReferenceKernel
from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid

H100 = GPUTarget("cuda", 90, 32)


def _add2():
    return tb.triton_kernel(ADD_KERNELS[2], grid=add_grid, constexprs={"BLOCK": BLOCK})


def test_interrupted_build_publishes_nothing_and_the_next_call_builds():
    """Ctrl-C (KeyboardInterrupt) inside a miss leaves no entry and no held lock."""
    calls = {"n": 0}

    def make(args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return lambda x: x * 2

    k = ReferenceKernel(make, ["x"])
    with pytest.raises(KeyboardInterrupt):
        k(3)
    assert k.num_entries == 0
    assert k(3) == 6 and k.num_entries == 1 and calls["n"] == 2


def test_interrupted_triton_compile_writes_no_cache_entry(fresh_cache_dir, monkeypatch):
    """A compile interrupted half-way stores nothing on disk; the retry compiles and stores."""
    monkeypatch.setattr(tb.binaries, "_files_by_key", {})
    real_compile = triton.compile

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(triton, "compile", interrupted)
    x = torch.randn(64)
    with pytest.raises(KeyboardInterrupt):
        _add2().compile_for(x, x, x, 64, target=H100)
    assert not (fresh_cache_dir / "triton").exists() or not any((fresh_cache_dir / "triton").iterdir())
    monkeypatch.setattr(triton, "compile", real_compile)
    key, files = _add2().compile_for(x, x, x, 64, target=H100)
    assert cache.load("triton", key) == files


def test_full_disk_falls_back_to_memory_and_warns_once(fresh_cache_dir, monkeypatch, caplog):
    """ENOSPC while writing: store returns False, one warning, no partial entry, binaries kept
    in memory (the kernel still compiles and serves)."""
    monkeypatch.setattr(tb.binaries, "_files_by_key", {})
    monkeypatch.setattr(cache, "_warned_unwritable", set())
    real_write = pathlib.Path.write_bytes

    def full(self, data):
        if str(fresh_cache_dir) in str(self):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    x = torch.randn(64)
    with caplog.at_level(logging.WARNING, logger="fastdispatch"):
        key, files = _add2().compile_for(x, x, x, 64, target=H100)
        _add2().compile_for(x, x[1:], x, 63, target=H100)   # a second binary: no second warning
    assert files and key in tb.binaries._files_by_key
    warnings = [r for r in caplog.records if "not writable" in r.getMessage()]
    assert len(warnings) == 1
    leftovers = list((fresh_cache_dir / "triton").glob("*")) if (fresh_cache_dir / "triton").exists() else []
    assert all(p.name.startswith(".tmp") is False for p in leftovers)
    assert cache.load("triton", key) is None


_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8,
           torch.bool, torch.complex64, torch.float8_e4m3fn]
_value = st.one_of(
    st.builds(lambda dt, n, off: torch.zeros(n + off + 1, dtype=dt)[off:off + n],
              st.sampled_from(_DTYPES), st.integers(0, 9), st.integers(0, 3)),
    st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.text(max_size=3), st.lists(st.integers(), max_size=2), st.just(object()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_value, min_size=0, max_size=6))
def test_fuzzed_arguments_fail_cleanly(args):
    """Any argument tuple either launches or raises TypeError/ValueError naming a problem, and
    a failed call leaves nothing published or compiled (CPU: tensors are never launchable)."""
    k = _add2()
    before = fastdispatch.stats().get("compiles", 0)
    with pytest.raises((TypeError, ValueError)) as info:
        k(*args)
    assert str(info.value)
    assert k.num_entries == 0
    assert fastdispatch.stats().get("compiles", 0) == before
