"""Helion rows of ``bench launch`` (issue 15): the n-input add written in Helion, called through
Helion and through ``fastdispatch.helion_kernel``.

:func:`helion_paths` follows ``bench_launch._paths``'s contract: ``{path name: fn(iterations)}``,
each fn running ``iterations`` back-to-back calls (the caller synchronizes and times). Before
returning it checks every path: poisoned outputs (NaN), random data, the result against torch
and bit-identical to Helion's own call. :func:`host_costs` says what the generated host
function's own work costs (its argument passing, output allocation and grid, with a launcher
that does nothing) beside the full call. Needs a CUDA GPU and Helion.
"""
from __future__ import annotations

import time

import torch

NUMEL = 4096

HELION = "Helion's own call"
FASTDISPATCH = "fastdispatch.helion_kernel"
HELION_ALLOC = "Helion's own call, allocating out"
FASTDISPATCH_ALLOC = "fastdispatch.helion_kernel, allocating out"
#: The same body through the plain fastdispatch Triton kernel, its output allocated by the
#: caller as the host function would (``torch.empty_like``), and that allocation alone: what
#: an allocating Helion call is compared with beside the plain hit.
PLAIN_ALLOC = "plain fastdispatch hit + torch.empty_like by the caller"
EMPTY_LIKE = "torch.empty_like alone"
RMS_SHAPE = (64, 1024)
HELION_RMS = "Helion's own call, rms_norm 64x1024 bf16 (every column)"
FASTDISPATCH_RMS = "fastdispatch.helion_kernel, rms_norm 64x1024 bf16"


def _check(name, got, expected, reference):
    if not torch.equal(got, expected):
        raise RuntimeError(f"bench helion: {name} differs from Helion's own call "
                           f"(max |diff| {(got - expected).abs().max().item()})")
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)


def _say_if_not_direct(name: str, wrapped) -> None:
    """Print when ``wrapped``'s entry keeps Helion's host function (Helion >= 1.5, or a host
    function that does more than a replay may: ``helion_replay``), so its row is read as such."""
    direct = wrapped.entries()[0].info.get("direct")
    if direct is not True:
        print(f"bench helion: {name} runs its host function (direct: {direct!r})")


def helion_paths(n: int) -> dict:
    """``{path name: fn(iterations)}`` for the ``n``-input Helion add (n in 2, 8, 16)."""
    import fastdispatch
    from fastdispatch.kernels import add as plain_add
    from fastdispatch.kernels import helion_kernels as hk

    kern, alloc = hk.ADD_KERNELS[n], hk.ADD_ALLOC_KERNELS[n]
    wrapped, wrapped_alloc = fastdispatch.helion_kernel(kern), fastdispatch.helion_kernel(alloc)
    inputs = [torch.randn(NUMEL, device="cuda") for _ in range(n)]
    reference = inputs[0].clone()
    for t in inputs[1:]:
        reference += t                                   # the kernels' summation order
    out = torch.full((NUMEL,), float("nan"), device="cuda")
    args = (*inputs, out)

    kern(*args)                                          # Helion: compile (fixed config)
    expected = out.clone()
    for name, fn in ((FASTDISPATCH, wrapped), (FASTDISPATCH, wrapped)):   # miss, then a hit
        out.fill_(float("nan"))
        fn(*args)
        torch.cuda.synchronize()
        _check(name, out, expected, reference)
    entry = wrapped.entries()[0]
    if entry.info.get("path") != "fast" or entry.hits != 1:
        raise RuntimeError(f"bench helion: fastdispatch entry is not the fast path: {entry.info}")

    expected_alloc = alloc(*inputs).clone()
    for name, fn in ((HELION_ALLOC, alloc), (FASTDISPATCH_ALLOC, wrapped_alloc),
                     (FASTDISPATCH_ALLOC, wrapped_alloc)):
        torch.full((NUMEL,), float("nan"), device="cuda")  # poisons the block the call gets
        _check(name, fn(*inputs), expected_alloc, reference)
    torch.cuda.synchronize()
    _say_if_not_direct(f"add{n}_alloc", wrapped_alloc)

    def helion(k):
        for _ in range(k):
            kern(*args)

    def fd(k):
        for _ in range(k):
            wrapped(*args)

    def helion_alloc(k):
        for _ in range(k):
            alloc(*inputs)

    def fd_alloc(k):
        for _ in range(k):
            wrapped_alloc(*inputs)

    plain = fastdispatch.triton_kernel(plain_add.ADD_KERNELS[n], grid=plain_add.add_grid(NUMEL),
                                       constexprs={"BLOCK": plain_add.BLOCK})
    first = inputs[0]
    torch.full((NUMEL,), float("nan"), device="cuda")
    allocated = torch.empty_like(first)
    plain(*inputs, allocated, NUMEL)
    torch.cuda.synchronize()
    torch.testing.assert_close(allocated, reference, rtol=1e-5, atol=1e-5)

    def plain_alloc(k):
        for _ in range(k):
            plain(*inputs, torch.empty_like(first), NUMEL)

    def empty_like(k):
        for _ in range(k):
            torch.empty_like(first)

    return {HELION: helion, FASTDISPATCH: fd, HELION_ALLOC: helion_alloc,
            FASTDISPATCH_ALLOC: fd_alloc, PLAIN_ALLOC: plain_alloc, EMPTY_LIKE: empty_like}


def rms_norm_paths(device: str = "cuda") -> dict:
    """``{path name: fn(iterations)}`` for the reduction kernel (``helion_kernels.rms_norm``,
    allocating its output): Helion's own call and ``fastdispatch.helion_kernel``, checked first
    (bit-identical to Helion's call, poisoned outputs; against torch within bf16's 2e-2)."""
    import fastdispatch
    from fastdispatch.kernels import helion_kernels as hk

    wrapped = fastdispatch.helion_kernel(hk.rms_norm)
    x = torch.randn(*RMS_SHAPE, device=device, dtype=torch.bfloat16)
    w = torch.randn(RMS_SHAPE[1], device=device, dtype=torch.bfloat16)
    expected = hk.rms_norm(x, w).clone()
    torch.testing.assert_close(expected.float(), hk.rms_norm_reference(x, w).float(), rtol=2e-2, atol=2e-2)
    for _ in range(2):   # the miss, then a hit
        torch.full(RMS_SHAPE, float("nan"), device=device, dtype=torch.bfloat16)   # poisons the block reused next
        got = wrapped(x, w)
        if not torch.equal(got, expected):
            raise RuntimeError("bench helion: fastdispatch rms_norm differs from Helion's own call")
    _say_if_not_direct("rms_norm", wrapped)

    def helion(k):
        for _ in range(k):
            hk.rms_norm(x, w)

    def fd(k):
        for _ in range(k):
            wrapped(x, w)

    return {HELION_RMS: helion, FASTDISPATCH_RMS: fd}


def _null_launcher(*args, **kwargs):
    return None


def host_costs(n: int, iterations: int = 20000, repeats: int = 5) -> dict:
    """us per call, median of ``repeats``: the host function alone (a launcher that does
    nothing) for the add writing ``out`` and for the allocating add, beside the full
    fastdispatch calls. What the host function costs = the first two; what the launch costs
    = the full call minus them."""
    import fastdispatch
    from fastdispatch.kernels import helion_kernels as hk

    inputs = [torch.randn(NUMEL, device="cuda") for _ in range(n)]
    out = torch.empty(NUMEL, device="cuda")
    rows = {}
    for label, kern, args in (("out given", hk.ADD_KERNELS[n], (*inputs, out)),
                              ("allocating", hk.ADD_ALLOC_KERNELS[n], tuple(inputs))):
        wrapped = fastdispatch.helion_kernel(kern)
        wrapped(*args)
        run = kern.bind(args)._run

        def host(k, run=run, args=args):
            for _ in range(k):
                run(*args, _launcher=_null_launcher)

        def full(k, wrapped=wrapped, args=args):
            for _ in range(k):
                wrapped(*args)

        for name, fn in ((f"host function alone, {label}", host),
                         (f"fastdispatch.helion_kernel, {label}", full)):
            times = []
            for _ in range(repeats):
                torch.cuda.synchronize()
                started = time.perf_counter_ns()
                fn(iterations)
                torch.cuda.synchronize()
                times.append((time.perf_counter_ns() - started) / iterations / 1000.0)
            rows[name] = sorted(times)[len(times) // 2]
    return rows


def main() -> None:   # python -m fastdispatch.bench_helion
    import statistics

    from fastdispatch.backends.helion import dropin_available, helion_version

    print(f"helion {helion_version()}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name()}, drop-in launcher: {dropin_available()}")
    for n in (2, 8, 16):
        paths = helion_paths(n)
        cells = {name: [] for name in paths}
        for _ in range(7):                               # interleaved repeats
            for name, fn in paths.items():
                fn(200)
                torch.cuda.synchronize()
                started = time.perf_counter_ns()
                fn(5000)
                torch.cuda.synchronize()
                cells[name].append((time.perf_counter_ns() - started) / 5000 / 1000.0)
        print(f"{n} inputs: " + ", ".join(f"{name} {statistics.median(v):.2f} us"
                                          for name, v in cells.items()))
        print(f"{n} inputs: " + ", ".join(f"{name} {v:.2f} us"
                                          for name, v in host_costs(n, 5000).items()))


if __name__ == "__main__":
    main()
