"""CuTe DSL's own call vs fastdispatch, on one binary (GPU only).

``out = a + b`` over 4096 fp32 (``fastdispatch.kernels.cute_add``), 3 torch tensors per call.
Paths, timed in one process, interleaved (each repeat runs every path once, in turn):

- ``tvm_ffi raw``: ``compiled.__tvm_ffi_object__()(a, b, out)`` -- TVM-FFI's C call alone;
- ``cute kwargs wrapper``: ``compiled(a, b, out)`` -- what a CuTe DSL user calls (4.8.1);
- ``fastdispatch``: ``cute_add_kernel()(a, b, out)`` -- key + lookup in C, then the same raw
  function (MODE_CALL);
- ``torch.add(out=)``: eager torch, for scale.

All three CuTe paths run the same loaded binary: the compiled object is seeded into the
backend's memory cache before the wrapper's first call (checked). Method: wall time of
``iterations`` back-to-back calls, the stream drained at the end; per call = total /
iterations; median (and min) over ``repeats``. Usage::

    python bench/bench_cute_call.py [--iterations 20000] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

N = 4096


def _time(call, args, iterations: int) -> float:
    """Seconds per call of ``call(*args)`` over ``iterations`` back-to-back calls."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        call(*args)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def measure(iterations: int = 20000, repeats: int = 7) -> dict:
    """Per-call times (us) of each path: ``{path: {"median_us", "min_us", "runs_us"}}``, plus
    ``"device"``. Raises RuntimeError without a CUDA GPU."""
    if not torch.cuda.is_available():
        raise RuntimeError("bench_cute_call needs a CUDA GPU")
    from fastdispatch.backends.cute import seed_binary
    from fastdispatch.kernels.cute_add import compile_tvm_ffi_add, cute_add_kernel

    compiled = compile_tvm_ffi_add()          # CuTe DSL's own compile, for this GPU's arch
    binary = compiled.fastdispatch_binary
    raw = compiled.__tvm_ffi_object__()
    if raw is None:
        raise RuntimeError("the compiled object has no TVM-FFI function (arch mismatch?)")
    seed_binary(binary)
    kernel = cute_add_kernel()

    a = torch.randn(N, device="cuda")
    b = torch.randn(N, device="cuda")
    out = torch.empty(N, device="cuda")
    kernel(a, b, out)                          # the miss: publishes an entry on the seeded binary
    torch.cuda.synchronize()
    entries = kernel.entries()
    if not any(e.fn is raw for e in entries):
        raise RuntimeError("fastdispatch entry does not use the seeded binary; not comparable")
    torch.testing.assert_close(out, a + b)

    paths = {
        "tvm_ffi raw": (raw, (a, b, out)),
        "cute kwargs wrapper": (compiled, (a, b, out)),
        "fastdispatch": (kernel, (a, b, out)),
        "torch.add(out=)": (lambda x, y, o: torch.add(x, y, out=o), (a, b, out)),
    }
    for call, args in paths.values():          # warm every path (first-call costs, clocks)
        _time(call, args, min(iterations, 2000))
    runs: dict = {name: [] for name in paths}
    for _ in range(repeats):
        for name, (call, args) in paths.items():
            runs[name].append(_time(call, args, iterations) * 1e6)
    result = {name: {"median_us": statistics.median(v), "min_us": min(v), "runs_us": v}
              for name, v in runs.items()}
    result["device"] = torch.cuda.get_device_name()
    result["method"] = (f"{N} fp32, wall time of {iterations} back-to-back calls then a sync, "
                        f"per call; median/min of {repeats} interleaved repeats")
    return result


def _print(result: dict) -> None:
    print(f"device: {result['device']}")
    print(f"method: {result['method']}")
    base = result["tvm_ffi raw"]["median_us"]
    print(f"{'path':<22}{'median us':>11}{'min us':>9}{'vs raw':>9}")
    for name, row in result.items():
        if not isinstance(row, dict):
            continue
        print(f"{name:<22}{row['median_us']:>11.2f}{row['min_us']:>9.2f}{row['median_us'] - base:>+9.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    ns = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_cute_call: no CUDA GPU; skipped")
        return
    _print(measure(ns.iterations, ns.repeats))


if __name__ == "__main__":
    main()
