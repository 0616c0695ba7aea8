"""torch.compile's per-kernel traced methods (``backends/triton/traced.py``), on the CPU.

Dynamo traces ``TritonKernel.__getitem__`` / ``__call__``; each kernel gets its own subclass whose
methods hold its constants as literals (fewer guards per compiled call). These tests run both the
generated methods and the general ones (``OffHotPath``'s, as under torch.compile) on the same
calls with Triton's kernel object replaced by a recorder, and check they make the same Triton
call (or the same Python binding) for every wrap form and call shape; and that the generated
classes are what the hot path expects (C slots, no ``__dict__``, no new state). The compiled
graphs and guards themselves are checked on the GPU (``test_gpu_drop_in.py``).
"""
import pytest
import torch
import triton
import triton.language as tl

import fastdispatch
from fastdispatch import keys
from fastdispatch.backends.triton import offpath
from fastdispatch.backends.triton.kernel import TritonKernel

pytestmark = pytest.mark.skipif(keys.IMPLEMENTATION != "cython",
                                reason="per-kernel classes are made only with the compiled key builder")


@triton.jit
def _copy(x, out, n, BLOCK: tl.constexpr, EVEN: tl.constexpr = False):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + offs, tl.load(x + offs, mask=offs < n), mask=offs < n)


@triton.jit
def _axpy(x, y, out, a, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + offs, a * tl.load(x + offs, mask=offs < n) + tl.load(y + offs, mask=offs < n), mask=offs < n)


_CONFIGS = [triton.Config({"BLOCK": 64}), triton.Config({"BLOCK": 128})]
_EVEN = {"EVEN": lambda args: args["n"] % 128 == 0}


class _Recorder:
    """Stands in for Triton's kernel object: ``rec[grid](*args, **kwargs)`` records the call."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((grid, args, kwargs))


def _meta_grid(META):   # one object: both paths' recorded calls carry it
    return (META["n"],)


def _wraps():
    """(name, make) for every wrap form with the constants the generated code must carry."""
    return {
        "jit": lambda: fastdispatch.triton_kernel(_copy),
        "jit, fixed BLOCK": lambda: fastdispatch.triton_kernel(_copy, constexprs={"BLOCK": 64}),
        "jit, fixed BLOCK and EVEN": lambda: fastdispatch.triton_kernel(_copy, constexprs={"BLOCK": 64, "EVEN": True}),
        "heuristics": lambda: fastdispatch.triton_kernel(triton.heuristics(_EVEN)(_copy)),
        "autotune": lambda: fastdispatch.triton_kernel(triton.autotune(configs=_CONFIGS, key=["n"])(_copy)),
        "axpy (nothing to add)": lambda: fastdispatch.triton_kernel(_axpy),
        "args grid": lambda: fastdispatch.triton_kernel(_copy, grid=lambda x, out, n, BLOCK, EVEN: (n // BLOCK,)),
        "args grid, fixed BLOCK": lambda: fastdispatch.triton_kernel(
            _copy, grid=lambda x, out, n, EVEN: (n,), constexprs={"BLOCK": 32}),
        "static grid": lambda: fastdispatch.triton_kernel(_copy, grid=(7, 2), constexprs={"BLOCK": 64}),
        "meta grid": lambda: fastdispatch.triton_kernel(_copy, grid=_meta_grid),
        "no grid": lambda: fastdispatch.triton_kernel(_copy),
    }


_X = torch.zeros(4)
_CALLS = [((_X, _X, 256), {}), ((_X, _X, 256, 64), {}), ((_X, _X, 256, 64, True), {}),
          ((_X, _X, 256), {"BLOCK": 32}), ((_X, _X), {"n": 256, "BLOCK": 32}), ((_X, _X, 256), {"EVEN": True}),
          ((_X, _X, 256, 64, True, 1), {}), ((_X,), {}), ((_X, _X, 256), {"num_warps": 2})]
_AXPY_CALLS = [((_X, _X, _X, 2.0, 256, 64), {}), ((_X, _X, _X, 2.0, 256), {"BLOCK": 64}),
               ((_X, _X, _X, 2.0, 256), {})]


def _as_traced(k, cls, *, general, monkeypatch):
    """``k`` moved to a plain subclass of ``cls`` made by ``type()`` (no C slots installed, so
    ``k[grid]`` and ``k(...)`` run the Python methods, as Dynamo traces them); for the general
    methods ``_is_compiling`` answers True."""
    if general:
        monkeypatch.setattr(offpath, "_is_compiling", lambda: True)
    k.__class__ = type("Probe", (cls,), {"__slots__": ()})
    recorder = _Recorder()
    k.kernel = recorder
    k._traced = (recorder,) + k._traced[1:]   # the general methods' copy of the kernel object
    return recorder


def _outcome(fn):
    try:
        fn()
        return "ok"
    except Exception as exc:  # noqa: BLE001  (both paths must raise the same)
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("wrap", sorted(_wraps()))
def test_generated_methods_make_the_general_methods_calls(wrap, monkeypatch):
    """For every call shape (positional, keywords, omitted defaults, too many positionals,
    missing arguments, launch options), ``k[grid](...)`` and ``k(...)`` through the generated
    methods record the same Triton calls, or raise the same error, as the general methods."""
    make = _wraps()[wrap]
    assert type(make()) is not TritonKernel   # it got its own class
    calls = _AXPY_CALLS if "axpy" in wrap else _CALLS
    results = {}
    for general in (False, True):
        with monkeypatch.context() as m:
            k = make()
            recorder = _as_traced(k, TritonKernel if general else type(k), general=general, monkeypatch=m)
            seen = []
            for args, kwargs in calls:
                seen.append(_outcome(lambda: k[(3,)](*args, **kwargs)))
                seen.append(_outcome(lambda: k(*args, **kwargs)))
            results[general] = (seen, recorder.calls)
    assert results[False] == results[True]
    assert results[False][1], "no call reached Triton's kernel object"


def test_generated_source_holds_the_constants_as_literals():
    """Nothing to add: ``kernel[grid]`` itself. Fixed constexprs and omitted defaults appear as
    literals; the trace reads no other state (no ``_traced``, no ``_is_compiling``)."""
    import linecache

    def source(k, name):
        return "".join(linecache.getlines(type(k).__dict__[name].__code__.co_filename))

    plain = fastdispatch.triton_kernel(_axpy)
    assert source(plain, "__getitem__").splitlines()[1].strip() == "return self.kernel[grid]"
    fixed = fastdispatch.triton_kernel(_copy, constexprs={"BLOCK": 64}, grid=lambda x, out, n, EVEN: (n,))
    text = source(fixed, "__getitem__") + source(fixed, "__call__")
    assert "BLOCK=64" in text and "kwargs['EVEN'] = False" in text and "(False, )" in text
    for k in (plain, fixed):
        for name in ("__getitem__", "__call__"):
            assert "_traced" not in source(k, name) and "_is_compiling" not in source(k, name)


def test_non_literal_constants_keep_the_general_methods():
    """A fixed constexpr with no literal form (a dtype) keeps TritonKernel's own methods."""
    k = fastdispatch.triton_kernel(_copy, constexprs={"BLOCK": 64, "EVEN": tl.float16})
    assert type(k) is TritonKernel


def test_user_subclass_keeps_its_methods():
    """A user's subclass of TritonKernel is not moved to a generated class."""
    class Mine(TritonKernel):
        pass
    assert type(Mine(_copy)) is Mine


def test_generated_class_runs_eager_calls_in_c():
    """The generated class has FastKernel's C slots (eager ``k[grid]`` is a BoundLaunch, not
    the traced method's Triton launcher), no instance ``__dict__``, and no state of its own."""
    k = fastdispatch.triton_kernel(_copy)
    assert type(k[(1,)]).__name__ == "BoundLaunch"
    assert not hasattr(k, "__dict__")
    assert type(k).__basicsize__ == TritonKernel.__basicsize__ and isinstance(k, TritonKernel)
    with pytest.raises(TypeError, match="missing argument"):   # C binder -> miss -> bind's error
        k(torch.zeros(4))


def test_adopt_class_refuses_a_class_with_state():
    """adopt_class moves a kernel only to a stateless subclass of its type."""
    k = fastdispatch.triton_kernel(_copy)

    class WithState(type(k)):
        __slots__ = ("extra",)
    with pytest.raises(TypeError, match="stateless subclass"):
        keys.impl.adopt_class(k, WithState)
    with pytest.raises(TypeError, match="stateless subclass"):
        keys.impl.adopt_class(k, TritonKernel)
