"""What a user-defined object on the traced path costs a torch.compile'd call (CPU, no GPU).

Issue 13's Triton path under torch.compile compiles to the same graph as the native call, yet
each call was ~4% slower on the H200 host (``bench/compile_probe.py``). This reproduces that on
the CPU with a stand-in op (``out.add_(x)``) instead of a Triton kernel, one process, rounds in
rotating order, medians of paired per-round ratios against the native call:

- ``fastdispatch-shaped (before)``: a ``keys.FastKernel`` subclass whose traced ``__getitem__``
  reads a 4-tuple attribute and returns a closure calling the op (``OffHotPath``'s general path);
- ``fastdispatch (now)``: what ``traced.py`` generates for a kernel with nothing to add: a
  per-kernel class with ``__slots__`` (no instance dict) whose ``__getitem__`` returns one slot;
- ``plain object``: the same on a plain Python object; ``attribute only``: ``Q._traced[0](...)``;
- ``native copy``: a second compiled copy of the native function (the null pair).

Measured on the CI CPU (torch 2.14.1, three runs): before 1.030-1.039, now 1.006-1.015, plain
object 1.020-1.025, attribute only 1.015-1.016, native copy 0.995-1.001. Before, the guard
check alone differed by only 0.1-0.4 us; ``perf diff`` put the rest in guard evaluation in situ
(GuardManager::check_nopybind, generic getattr on the object) and diffuse allocation/GC.
Usage: ``python bench/compile_overhead_cpu.py``.
"""
import functools
import operator
import statistics
import time

import torch

from fastdispatch import bench_rounds, keys

_is_compiling = torch.compiler.is_compiling


def op(x, out):
    out.add_(x)


class FastShaped(keys.FastKernel):
    def __getitem__(self, grid):
        if not _is_compiling():
            return keys.FastKernel.__getitem__(self, grid)
        kernel, fixed, limit, defaults = self._traced

        def traced(*args, **kwargs):
            return kernel(*args, **kwargs, **fixed)
        return traced


class Now(keys.FastKernel):
    __slots__ = ("kernel",)

    def __getitem__(self, grid, *_not_specialized):
        return self.kernel


class Plain:
    def __getitem__(self, grid):
        kernel = self._traced[0]

        def traced(*args, **kwargs):
            return kernel(*args, **kwargs)
        return traced


W = FastShaped(bytes([keys.ROLE_CLASS] * 2), lambda *a: None)
P, Q = Plain(), Plain()
P._traced = Q._traced = (op,)
W._traced = (op, {}, 2, ())
N = Now(bytes([keys.ROLE_CLASS] * 2), lambda *a: None)
N.kernel = op


def fastdispatch_shaped(x, out):
    W[(1,)](x, out)
    return out


def fastdispatch_now(x, out):
    N[(1,)](x, out)
    return out


def plain_object(x, out):
    P[(1,)](x, out)
    return out


def attribute_only(x, out):
    Q._traced[0](x, out)
    return out


def native(x, out):
    op(x, out)
    return out


def native_copy(x, out):
    op(x, out)
    return out


def _per_call_us(fn, args, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - t0) / calls * 1e6


def main(rounds: int = 31, calls: int = 2000):
    x, out = torch.randn(16), torch.zeros(16)
    fns = {f.__name__: torch.compile(f, fullgraph=True)
           for f in (fastdispatch_shaped, fastdispatch_now, plain_object, attribute_only, native, native_copy)}
    for f in fns.values():
        f(x, out)
        f(x, out)
    samples = bench_rounds.interleaved(
        {name: functools.partial(_per_call_us, fn, (x, out), calls) for name, fn in fns.items()}, rounds)
    for name, values in samples.items():
        ratio = bench_rounds.paired(values, samples["native"], operator.truediv).median
        print(f"{name:<22} {statistics.median(values):7.2f} us   {ratio:.3f}x native")


if __name__ == "__main__":
    main()
